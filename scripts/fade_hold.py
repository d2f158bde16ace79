#!/usr/bin/env python3
"""Brightness after a fade-in, while the picture holds still, through a preset's device chain.

    python scripts/fade_hold.py [--presets itm,sr4-itm] [--hold 30]

This fades the film test's daylight scene in over 10 frames (96×56), holds it for longer than
the film test does, and prints the output's mean
luminance (cd/m²) on every second frame from the end of the fade, with temporal smoothing on
and off, and the largest frame-to-frame change during the hold (the "no jumps" bar is 2 %).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hdrvideo.presets import load_preset  # noqa: E402
from hdrvideo.training.film import Clip, chain_runner, display_luminance, film_clips, run_processor_on_clip  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="itm,sr2-itm,sr4-itm")
    ap.add_argument("--hold", type=int, default=30, help="frames held after the fade")
    args = ap.parse_args()
    clip = {c.name: c for c in film_clips(56, 96, 10)}["fade-in"]
    fade = clip.frames[: clip.frames.shape[0] - clip.hold]
    n = fade.shape[0]
    clip = Clip("fade-in+hold", torch.cat([fade, fade[-1:].expand(args.hold, -1, -1, -1)]), "fade")
    for name in args.presets.split(","):
        for temporal in ("auto", "off"):
            process, _ = chain_runner(load_preset(name), temporal=temporal)
            mean = display_luminance(run_processor_on_clip(process, clip)).mean(dim=(-2, -1)).flatten().tolist()
            change = max(abs(mean[i + 1] / mean[i] - 1) for i in range(n - 1, len(mean) - 1))
            print(f"{name:10s} smoothing {temporal:4s} {[round(v, 1) for v in mean[n - 1::2]]}  "
                  f"largest change in the hold {100 * change:.2f} %")


if __name__ == "__main__":
    main()
