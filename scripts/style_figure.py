#!/usr/bin/env python3
"""The README's styles figure: SDR inputs and the `itm` preset's real and broadcast outputs.

    python scripts/style_figure.py --data heldout --out engines/figures/styles.png

Rows are held-out crops (Poly Haven, CC0; `hdrvideo synth --split test`); columns are the SDR
input as delivered, then each style's HDR10 output shown on an SDR page: decoded from PQ to
cd/m², rolled off with the BT.2390 EETF from 1000 to 400 cd/m² (maxRGB), scaled so 400 cd/m² is
page white, BT.2020 → BT.709 and the BT.1886 inverse EOTF. One viewing transform for both
styles, so their brightness and contrast compare; the page cannot show HDR itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hdrvideo import colour  # noqa: E402
from hdrvideo.presets import load_preset  # noqa: E402
from hdrvideo.processors import build_processor  # noqa: E402
from hdrvideo.training.datasets import SynthPairs  # noqa: E402

VIEW_PEAK = 400.0


def for_page(pq: torch.Tensor) -> torch.Tensor:
    nits = colour.bt2390_tone_map(colour.pq_decode(pq.double()), 1000.0, VIEW_PEAK, mode="maxrgb")
    return colour.sdr_bt709_signal(nits / VIEW_PEAK)


def write_png(rgb: torch.Tensor, path: Path) -> None:
    arr = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="image2") as c:
        s = c.add_stream("png")
        s.width, s.height, s.pix_fmt = arr.shape[1], arr.shape[0], "rgb24"
        for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
            c.mux(p)
        for p in s.encode():
            c.mux(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the held-out synthetic cache")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--views", default="12,38,60", help="indices of the crops to show")
    ap.add_argument("--preset", default="itm")
    args = ap.parse_args()
    pairs = SynthPairs(args.data, 1)
    idx = [int(i) for i in args.views.split(",")]
    sdr = torch.stack([pairs.get(i)[0] for i in idx]).float() / 255.0
    preset = load_preset(args.preset)
    columns = [sdr]
    for style in ("real", "broadcast"):
        proc = build_processor(preset.with_style(style), device="cpu", backend="torch")
        columns.append(for_page(proc(sdr)))
    gap = 4
    rows = [torch.cat([torch.cat([c[r], torch.ones(3, c.shape[-2], gap)], dim=-1) for c in columns], dim=-1)[..., :-gap]
            for r in range(len(idx))]
    sep = torch.ones(3, gap, rows[0].shape[-1])
    grid = torch.cat([t for r in rows for t in (r, sep)][:-1], dim=-2)
    write_png(grid.float(), args.out)
    print(args.out, tuple(grid.shape[-2:]), "columns: SDR input | real | broadcast")


if __name__ == "__main__":
    main()
