#!/usr/bin/env python3
"""Detail kept by the deband stage: PSNR against the un-quantised truth, textured vs smooth areas.

    python scripts/deband_detail.py --photos ../shared/data/hdr-photos/polyhaven [--crops 2] [--json]

Crops of the HDR photographs (training scenes only; the held-out scenes are left alone) are
graded and rendered to SDR as the synthetic training pairs are (:mod:`hdrvideo.training.synthesis`),
kept in float as the truth, and passed through 8-bit limited BT.709 4:2:0 as a decoder would
deliver them. Luma PSNR (Y', the plane the deband stage works on) against the truth is reported
for the 8-bit signal and for the debanded one, on 8×8 blocks whose truth luma varies by more
than 2 codes (texture), 0.5–2 codes (low texture) and less (smooth). Issue 12's bar: textured
regions lose ≤ 0.2 dB.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hdrvideo import colour  # noqa: E402
from hdrvideo.dequantize import code_step, deband  # noqa: E402
from hdrvideo.training import synthesis as S  # noqa: E402


def through_8bit(rgb: torch.Tensor) -> torch.Tensor:
    y, cb, cr = colour.rgb_to_planes(rgb.double(), "bt709", 8, False, "left")
    return colour.planes_to_rgb(y, cb, cr, "bt709", 8, False, "left").clamp(0, 1).float()


def luma(rgb: torch.Tensor) -> torch.Tensor:
    return colour.rgb_to_ycbcr(rgb.double(), "bt709")[:, :1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--crops", type=int, default=2, help="crops per training scene")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    scenes = S.list_scenes(args.photos)
    train, _ = S.split_scenes(list(scenes))
    acc = {k: [0.0, 0.0, 0] for k in ("texture", "low texture", "smooth", "all")}
    step = code_step(8, False)
    for name in train:
        pano = S.load_panorama(scenes[name])
        lo, hi = S.band_rows(pano.shape[-2], 192)
        for _ in range(args.crops):
            crop = S.band_crop(pano, int(rng.integers(lo, hi + 1)), int(rng.integers(0, pano.shape[-1])), 192, 256)
            truth = S.sdr_rendition(S.hdr10_grade(crop, key_nits=25.0), S.draw_sdr_recipe(rng)).float()[None]
            x = through_8bit(truth)
            y = deband(x.clone(), step)
            t = luma(truth)
            std = (F.avg_pool2d(t * t, 8) - F.avg_pool2d(t, 8) ** 2).clamp(min=0).sqrt() * 219

            def up(m):
                return F.interpolate(m.double(), scale_factor=8)[:, 0].bool()

            masks = {"texture": up(std > 2.0), "smooth": up(std < 0.5)}
            masks["low texture"] = ~masks["texture"] & ~masks["smooth"]
            masks["all"] = torch.ones_like(masks["smooth"])
            e8 = ((luma(x) - t) ** 2)[:, 0]
            ed = ((luma(y) - t) ** 2)[:, 0]
            for key, m in masks.items():
                acc[key][0] += float(e8[m].sum())
                acc[key][1] += float(ed[m].sum())
                acc[key][2] += int(m.sum())
    rows = []
    for key, (e8, ed, n) in acc.items():
        p8, pd = 10 * math.log10(n / e8), 10 * math.log10(n / ed)
        rows.append({"region": key, "pixels": n, "psnr_8bit": round(p8, 3), "psnr_debanded": round(pd, 3),
                     "change_db": round(pd - p8, 3)})
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'region':12s} {'pixels':>9s} {'8-bit':>8s} {'debanded':>9s} {'change':>8s}   (luma PSNR vs the float truth, dB)")
    for r in rows:
        print(f"{r['region']:12s} {r['pixels']:9d} {r['psnr_8bit']:8.3f} {r['psnr_debanded']:9.3f} {r['change_db']:+8.3f}")


if __name__ == "__main__":
    main()
