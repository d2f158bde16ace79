"""Real-grade targets: a synthetic set's SDR renditions graded by a teacher network (AGCM).

The shipped ``broadcast`` style learns the ITU down-conversion chain's inverse (SDR white near
203 cd/m²). The ``real`` style learns the look of real HDR10 grades, as HDRTV1K pairs YouTube
HDR videos with their SDR versions: AGCM (Chen et al., "A New Journey from SDRTV to HDRTV",
ICCV 2021), trained on HDRTV1K, grades any SDR picture that way, so it labels our SDR inputs.

:func:`relabel_set` turns a cache of :mod:`hdrvideo.training.synthesis` into one whose targets
are the teacher's grade of each SDR rendition: every (view, rendition) becomes one view with one
rendition, its target the teacher applied to the clean full-resolution rendition (re-rendered
from the view's HDR grade and recipe, so the H.264 artefacts of the stored inputs are not in the
target), and its ×1/×2/×4 inputs the stored ones (compressed where the cache compressed them).
The result reads with :class:`hdrvideo.training.datasets.SynthPairs` as any cache does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .. import colour
from .synthesis import SdrRecipe, quantize, sdr_rendition

__all__ = ["relabel_set", "teacher_grade"]


@torch.inference_mode()
def teacher_grade(teacher: torch.nn.Module, sdr: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """(N,3,H,W) SDR R'G'B' in [0,1] → the teacher's (N,3,H,W) PQ BT.2020 R'G'B' in [0,1],
    each image graded on its own (its own condition vector)."""
    out = [teacher(sdr[i: i + batch].float()).clamp(0.0, 1.0) for i in range(0, sdr.shape[0], batch)]
    return torch.cat(out)


def relabel_set(cache_dir: str | Path, out_dir: str | Path, teacher: torch.nn.Module,
                teacher_name: str = "agcm", progress=None) -> Path:
    """Write ``out_dir``: the views of cache ``cache_dir`` with targets graded by ``teacher``."""
    src, out = Path(cache_dir), Path(out_dir)
    meta = json.loads((src / "meta.json").read_text())
    hdr = np.load(src / "hdr.npy", mmap_mode="r")
    scales = [s for s in (1, 2, 4) if (src / f"sdr_x{s}.npy").exists()]
    inputs = {s: np.load(src / f"sdr_x{s}.npy", mmap_mode="r") for s in scales}
    n, k = inputs[scales[0]].shape[:2]
    out.mkdir(parents=True, exist_ok=True)
    targets = np.zeros((n * k,) + hdr.shape[1:], np.uint16)
    views = []
    for i in range(n):
        graded = colour.pq_decode(torch.from_numpy(hdr[i].astype(np.float64)) / 65535.0)
        view = meta["views"][i]
        clean = []
        for j in range(k):
            recipe = SdrRecipe(**view["variants"][j])
            clean.append(quantize(sdr_rendition(graded, recipe).float(), 8).float() / 255.0)
            crf = {key: c[j] for key, c in view.get("crf", {}).items()}
            views.append({**{key: v for key, v in view.items() if key not in ("variants", "crf")},
                          "variants": [view["variants"][j]], "crf": crf, "source_view": i, "source_variant": j})
        grade = teacher_grade(teacher, torch.stack(clean))
        targets[i * k: (i + 1) * k] = quantize(grade, 16).numpy().astype(np.uint16)
        if progress:
            progress(i + 1, n)
    np.save(out / "hdr.npy", targets)
    for s in scales:
        arr = np.asarray(inputs[s])
        np.save(out / f"sdr_x{s}.npy", arr.reshape((n * k, 1) + arr.shape[2:]))
    new_meta = {**meta, "views": views,
                "target": {"style": "real", "teacher": teacher_name, "source": str(src.name),
                           "note": "target = teacher grade of the clean full-resolution SDR rendition"}}
    (out / "meta.json").write_text(json.dumps(new_meta, indent=1))
    return out
