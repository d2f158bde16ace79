"""The torch backend and the pipeline on a CUDA GPU (skipped without one; run by scripts/gpu-check.sh)."""

from __future__ import annotations

import pytest
import torch

import hdrvideo
from hdrvideo import models
from hdrvideo.backends.torch_backend import TorchBackend
from hdrvideo.presets import find_weights, load_preset

from conftest import bars_planes, decode_planes, write_planes_clip

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _shipped(preset: str):
    p = load_preset(preset).resolve(540)
    path = find_weights(p)
    if path is None:
        pytest.skip(f"{preset} has no installed weights")
    return models.load_model(p.model.arch, str(path), colour_domain=p.model.colour_domain).eval()


def _frames(n: int, h: int, w: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    ramp = torch.linspace(0, 1, w).view(1, 1, 1, w).expand(n, 3, h, w)
    return (0.7 * ramp + 0.3 * torch.rand(n, 3, h, w, generator=g)).clamp(0, 1)


def test_cuda_defaults_fp16_fp32_statistics_graphs_channels_last():
    be = TorchBackend(_shipped("sr4-itm"), "cuda")
    assert be.fp16 and be.channels_last and be.cuda_graphs and be.cudnn_benchmark
    stats = {id(p) for m in be.model.statistics_modules() for p in m.parameters()}
    assert all(p.dtype == (torch.float32 if id(p) in stats else torch.float16) for p in be.model.parameters())


@pytest.mark.parametrize("preset", ["itm", "sr4-itm", "sr4-itm-gpgm"])
def test_cuda_fp16_with_graphs_matches_cpu_fp32(preset):
    model = _shipped(preset)
    x = _frames(2, 68, 120)
    ref = TorchBackend(model, "cpu").run(x).clamp(0, 1)
    be = TorchBackend(model, "cuda")
    outs = [be.run(x.cuda()).clamp(0, 1).cpu() for _ in range(3)]  # eager, then captured, then replayed
    assert be._graphs["run"].captures == 1
    for y in outs:
        assert torch.isfinite(y).all() and (y - ref).abs().max().item() < 1e-2
    assert (outs[1] - outs[2]).abs().max().item() == 0  # replays are deterministic
    ctx = be.context(x.cuda())
    assert all(c.dtype == torch.float32 and c.is_cuda for c in ctx)
    tiled = be.run_with_context(x.cuda(), ctx, tile=48, overlap=16).clamp(0, 1).cpu()
    assert (tiled - ref).abs().max().item() < 1e-2


def test_explicit_device_index_and_fp32():
    model = _shipped("itm")
    x = _frames(1, 36, 64)
    be = TorchBackend(model, "cuda:0", fp16=False)
    y = be.run(x)
    assert y.device.type == "cpu" or y.is_cuda
    ref = TorchBackend(model, "cpu").run(x)
    assert (y.cpu() - ref).abs().max().item() < 5e-3  # TF32 convolutions


def test_neural_conversion_on_cuda_matches_the_cpu_conversion(tmp_path):
    if find_weights(load_preset("itm").resolve(36)) is None:
        pytest.skip("itm has no installed weights")
    clip = write_planes_clip(tmp_path / "in.mkv", [bars_planes(64, 36, [(60, 110, 150), (180, 128, 128),
                                                                        (120, 160, 90), (230, 128, 128)])] * 3)
    outs = {}
    for dev in ("cpu", "cuda"):
        r = hdrvideo.convert(clip, tmp_path / f"{dev}.mkv", preset="itm", device=dev, backend="torch", crf=4,
                             x265_preset="ultrafast")
        assert r.frames == 3
        outs[dev] = decode_planes(tmp_path / f"{dev}.mkv")
    for (yc, _, _), (yg, _, _) in zip(outs["cpu"], outs["cuda"]):
        diff = (yc.astype(int) - yg.astype(int))
        assert abs(diff.mean()) < 1.0 and abs(diff).max() <= 8
