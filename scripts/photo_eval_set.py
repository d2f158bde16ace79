#!/usr/bin/env python3
"""A held-out set of real SDR camera photographs, graded by the teacher: the real style's check
on content that is not a rendition of an HDR photograph.

    pip download --no-deps scikit-image -d wheels && unzip -o wheels/scikit_image-*.whl 'skimage/data/*'
    python scripts/photo_eval_set.py --images skimage/data --teacher ../shared/reference/agcm/AGCM.pth --out photos-real
    hdrvideo eval --preset itm --style real --data photos-real --teacher ../shared/reference/agcm/AGCM.pth

The photographs (scikit-image's bundled sample data; public domain or CC0, per its
``skimage/data/_fetchers.py``): astronaut.png (NASA, public domain), chelsea.png (CC0, Stefan van
der Walt), coffee.png (CC0, Rachel Michetti), rocket.jpg (SpaceX, public domain). Each is
cropped to 192×256 tiles (four per photo where it is large enough) read as BT.709 R'G'B'. The ×2
and ×4 inputs are the antialiased bicubic downscales of the synthetic sets; the target is the
teacher's grade of the full-resolution tile. Written as a synthetic cache (``SynthPairs``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hdrvideo.models import load_model, sha256_file  # noqa: E402
from hdrvideo.training.relabel import teacher_grade  # noqa: E402
from hdrvideo.training.synthesis import bicubic_downscale, quantize  # noqa: E402

PHOTOS = {"astronaut.png": "NASA, public domain", "chelsea.png": "CC0, Stefan van der Walt",
          "coffee.png": "CC0, Rachel Michetti", "rocket.jpg": "SpaceX, public domain"}
TILE = (192, 256)


def read_rgb(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        return frame.to_ndarray(format="rgb24")


def tiles(img: np.ndarray) -> list[np.ndarray]:
    h, w = img.shape[:2]
    th, tw = TILE
    if h < th or w < tw:
        img = np.ascontiguousarray(np.rot90(img)) if w >= th and h >= tw else img
        h, w = img.shape[:2]
    rows = [0, h - th] if h >= 2 * th else [(h - th) // 2]
    cols = [0, w - tw] if w >= 2 * tw else [(w - tw) // 2]
    return [img[r: r + th, c: c + tw] for r in rows for c in cols]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    crops, views = [], []
    for name, licence in PHOTOS.items():
        path = args.images / name
        for k, t in enumerate(tiles(read_rgb(path))):
            crops.append(torch.from_numpy(t.copy()).permute(2, 0, 1))
            views.append({"scene": path.stem, "tile": k, "licence": licence, "sha256": sha256_file(path)})
    sdr = torch.stack(crops).float() / 255.0
    teacher = load_model("agcm", args.teacher).eval()
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "hdr.npy", quantize(teacher_grade(teacher, sdr), 16).numpy().astype(np.uint16))
    np.save(args.out / "sdr_x1.npy", (sdr * 255).round().to(torch.uint8)[:, None].numpy())
    for s in (2, 4):
        np.save(args.out / f"sdr_x{s}.npy", quantize(bicubic_downscale(sdr, s), 8)[:, None].numpy())
    meta = {"config": {"source": "scikit-image sample photographs"}, "scenes": sorted({v["scene"] for v in views}),
            "held_out": [], "views": views,
            "target": {"style": "real", "teacher": "agcm", "source": "scikit-image photographs",
                       "note": "target = teacher grade of the full-resolution tile"}}
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1))
    print(f"{len(views)} tiles → {args.out}")


if __name__ == "__main__":
    main()
