#!/usr/bin/env python3
"""Per-frame CPU cost of the dequantisation stages (deband + dither) next to the colour maths
and x265, at 640×360 and 1920×1080.

    python scripts/deband_cost.py [--repeat 7] [--batch 4] [--json]

For each size it times, on the built-in sample scene (sky gradient, texture, bars; about half of
it smooth) and on a full-frame smooth gradient (the worst case: everything is debanded and
dithered): the Deband stage, the Dither stage, the bt2408 processor (BT.1886 → BT.2020 → PQ),
and libx265 (10-bit 4:2:0, preset medium, CRF 18, the defaults) per frame over a short clip.
Frames go through in batches of --batch (default 1; a conversion uses the preset's, 4).
Costs are CPU time, in milliseconds per frame: torch runs on one thread and is timed with the
thread's CPU clock (minimum over --repeat runs), x265 with the process CPU clock (all its
threads), so a busy machine inflates them little and the ratios compare work, not waiting.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hdrvideo import colour  # noqa: E402
from hdrvideo.banding import gradient_planes  # noqa: E402
from hdrvideo.dequantize import code_step  # noqa: E402
from hdrvideo.media.sample import _scene  # noqa: E402
from hdrvideo.processors.classical import BT2408Processor  # noqa: E402
from hdrvideo.stages import HDR, SDR, Deband, Dither, Frames  # noqa: E402


def _time(fn, repeat: int) -> tuple[float, float]:
    fn()
    runs = []
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()
        runs.append(time.thread_time() - t0)
    return min(runs) * 1e3, statistics.median(runs) * 1e3


def _as_8bit(rgb: torch.Tensor) -> torch.Tensor:
    """Through 8-bit limited BT.709 4:2:0 and back, as the decoder would deliver it."""
    y, cb, cr = colour.rgb_to_planes(rgb, "bt709", 8, False, "left")
    return colour.planes_to_rgb(y, cb, cr, "bt709", 8, False, "left").clamp_(0.0, 1.0)


def _x265_ms_per_frame(pq: torch.Tensor, frames: int = 8) -> float:
    import tempfile

    from hdrvideo.media.encode import EncoderConfig, HevcEncoder
    from hdrvideo.media.hdr10_boxes import MasteringMetadata

    h, w = pq.shape[-2:]
    y, cb, cr = (p[0].numpy().astype(np.uint16) for p in colour.rgb_to_planes(pq, "bt2020", 10, False, "left"))
    cfg = EncoderConfig(width=w, height=h, time_base=Fraction(1, 24), rate=Fraction(24), encoder="libx265", crf=18.0,
                        x265_preset="medium", chroma_siting="left", mastering=MasteringMetadata("p3-d65", 1000.0, 0.0001))
    with tempfile.TemporaryDirectory() as tmp:
        planes = [(np.roll(y, i, 1), np.roll(cb, i // 2, 1), np.roll(cr, i // 2, 1)) for i in range(frames)]
        t0 = time.process_time()
        enc = HevcEncoder(str(Path(tmp) / "x.mp4"), cfg)
        for i, (py, pb, pr) in enumerate(planes):  # the picture moves a little each frame
            enc.encode(py, pb, pr, i)
        enc.close()
        return (time.process_time() - t0) / frames * 1e3


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = []
    for w, h in ((640, 360), (1920, 1080)):
        scenes = {
            "sample scene": _as_8bit(_scene(1.0, w, h)[None]),
            "full-frame gradient": colour.planes_to_rgb(
                *[torch.from_numpy(p.astype(np.int32))[None] for p in gradient_planes("sky", w, h)],
                "bt709", 8, False, "left").clamp_(0.0, 1.0),
        }
        proc = BT2408Processor()
        deband = Deband(code_step(8, False))
        dither = Dither()
        x265 = _x265_ms_per_frame(proc(scenes["sample scene"]))
        n = args.batch
        for name, rgb in scenes.items():
            rgb = rgb.expand(n, -1, -1, -1).contiguous()
            frames = Frames(rgb, list(range(n)), SDR, [True] + [False] * (n - 1))
            debanded = deband(Frames(rgb.clone(), frames.pts, SDR, frames.cut))
            hdr = debanded.with_rgb(proc(debanded.rgb), HDR)
            row = {"size": f"{w}x{h}", "content": name,
                   "smooth_fraction": round(float(debanded.smooth.mean()), 3)}
            copies = [rgb.clone() for _ in range(args.repeat + 1)]  # the stage works in place
            for label, fn in (("deband", lambda: deband(Frames(copies.pop(), frames.pts, SDR, frames.cut))), ("dither", lambda: dither(hdr)),
                              ("bt2408", lambda: proc(rgb))):
                best, med = _time(fn, args.repeat)
                row[f"{label}_ms"] = round(best / n, 2)
                row[f"{label}_median_ms"] = round(med / n, 2)
            row["x265_medium_ms"] = round(x265, 1)
            row["deband+dither / x265"] = round((row["deband_ms"] + row["dither_ms"]) / x265, 3)
            results.append(row)
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"{'size':10s} {'content':20s} {'smooth':>6s} {'deband':>8s} {'dither':>8s} {'bt2408':>8s} {'x265':>8s} {'(d+d)/x265':>10s}  (CPU ms per frame)")
    for r in results:
        print(f"{r['size']:10s} {r['content']:20s} {r['smooth_fraction']:6.2f} {r['deband_ms']:8.2f} {r['dither_ms']:8.2f} "
              f"{r['bt2408_ms']:8.2f} {r['x265_medium_ms']:8.1f} {r['deband+dither / x265']:10.3f}")


if __name__ == "__main__":
    main()
