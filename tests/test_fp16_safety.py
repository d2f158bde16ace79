"""FP16 safety of every shipped weight file (issue "real films"): over inputs films contain —
black, near-black, white, flat greys, noise, a real-looking frame, letterbox — every intermediate
activation stays far inside FP16's range in FP32, and the network run in half precision is
finite and close to FP32."""

from __future__ import annotations

import tomllib

import pytest
import torch

from hdrvideo.models import load_model
from hdrvideo.training.film import film_clips

from conftest import REPO

ENGINES = REPO / "engines"
SHIPPED = sorted(tomllib.loads((ENGINES / "weights.toml").read_text(encoding="utf-8")))


def _sweep(h: int = 48, w: int = 80) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    clips = {c.name: c.frames for c in film_clips(height=h, width=w, frames=4)}
    return {
        "black": torch.zeros(1, 3, h, w),
        "near-black": torch.full((1, 3, h, w), 2 / 255),
        "white": torch.ones(1, 3, h, w),
        "grey-18": torch.full((1, 3, h, w), 0.46),
        "grey-50": torch.full((1, 3, h, w), 0.73),
        "noise": torch.rand(1, 3, h, w, generator=g),
        "frame": clips["fade-out"][:1],
        "letterbox": clips["letterbox"][:1],
        "night": clips["cut"][1:2],
    }


@pytest.mark.parametrize("name", SHIPPED)
def test_activations_stay_far_inside_fp16(name):
    model = load_model(None, ENGINES / name).eval()
    peak = {}

    def hook(mod, _inp, out):
        outs = out if isinstance(out, (tuple, list)) else (out,)
        for o in outs:
            if isinstance(o, torch.Tensor) and o.is_floating_point() and o.numel():
                peak[mod] = max(peak.get(mod, 0.0), float(o.detach().abs().max()))

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        with torch.inference_mode():
            for x in _sweep().values():
                y = model(x)
                assert torch.isfinite(y).all()
    finally:
        for h in handles:
            h.remove()
    assert max(peak.values()) < 1e4


@pytest.mark.parametrize("name", SHIPPED)
def test_half_precision_is_finite_and_close(name):
    model = load_model(None, ENGINES / name).eval()
    half = load_model(None, ENGINES / name).eval().half()
    with torch.inference_mode():
        for label, x in _sweep().items():
            ref = model(x)
            y = half(x.half()).float()
            assert torch.isfinite(y).all(), label
            assert float((y - ref).abs().max()) < 2e-3, label
