"""The torch backend's FP16 path keeps image statistics in FP32, and its GPU speed-ups degrade
gracefully. Runs on the CPU (torch has float16 convolutions there; slow, so the frames are small
except where the frame size is the point)."""

from __future__ import annotations

import logging

import pytest
import torch

from hdrvideo import models
from hdrvideo.backends.torch_backend import CudaGraphCache, TorchBackend
from hdrvideo.models.gpgmnet import GPGMNet
from hdrvideo.models.irnet import CCALayer, IRNet


def _tiny_irnet(seed: int = 0) -> IRNet:
    torch.manual_seed(seed)
    return IRNet(1, 16, 1).eval()


def test_half_path_is_finite_and_within_2e3_of_fp32_on_a_flat_540x960_frame():
    """A 960×540 channel sum is 259,200× a feature value: beyond FP16 unless kept in FP32."""
    model = _tiny_irnet()
    model.clamp_output = False  # compare the network's values, not two frames clipped to [0, 1]
    x = torch.full((1, 3, 540, 960), 0.55)
    ref = TorchBackend(model, "cpu", fp16=False).run(x)
    be = TorchBackend(model, "cpu", fp16=True)
    y = be.run(x)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    print(f"flat 540x960: |fp16 - fp32| max {(y - ref).abs().max().item():.2e}, output range "
          f"{ref.min().item():.3f}..{ref.max().item():.3f}")
    assert ref.abs().max().item() > 0.1
    assert (y - ref).abs().max().item() <= 2e-3
    # the statistics the backend hands out are FP32
    ctx = be.context(x)
    assert ctx is not None and all(c.dtype == torch.float32 for c in ctx)


def test_fp32_statistics_survive_features_that_overflow_a_half_variance():
    """Deviations above 256 square past FP16's 65,504: a plain .half() attention is NaN."""
    torch.manual_seed(1)
    cca = CCALayer(16).eval()
    feats = torch.randn(1, 16, 64, 64) * 600.0 + 100.0
    with torch.no_grad():
        ref = cca.attention(feats)
        naive = CCALayer(16).eval()
        naive.load_state_dict(cca.state_dict())
        naive = naive.half()
        bad = naive.attention(feats.half())
    assert not torch.isfinite(bad).all()  # what model.half() did before
    model = IRNet(1, 16, 1).eval()
    model.IRB1.esa.load_state_dict(cca.state_dict())
    model.half_with_fp32_statistics()
    esa = model.IRB1.esa
    assert esa.conv_du[0].weight.dtype == torch.float32 and model.fea_conv.weight.dtype == torch.float16
    with torch.no_grad():
        out, att = esa(feats.half())
    assert att.dtype == torch.float32 and out.dtype == torch.float16
    assert torch.isfinite(att).all() and (att - ref).abs().max().item() < 1e-3


@pytest.mark.parametrize("arch,size", [("gpgmnet-x2", (40, 48)), ("agcm", (64, 96))])
def test_mixed_precision_of_every_statistics_network(arch, size):
    torch.manual_seed(0)
    # GPGMNet slimmed (16 channels, one module; the prior extractor is the full one): CPU FP16 is slow
    model = GPGMNet(2, channels=16, n_modules=1).eval() if arch.startswith("gpgm") else models.create(arch).eval()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 3, *size, generator=g)
    ref = TorchBackend(model, "cpu", fp16=False).run(x)
    be = TorchBackend(model, "cpu", fp16=True)
    stats = {id(p) for m in be.model.statistics_modules() for p in m.parameters()}
    dtypes = {p.dtype for p in be.model.parameters() if id(p) in stats}
    others = {p.dtype for p in be.model.parameters() if id(p) not in stats}
    assert dtypes == {torch.float32} and others == {torch.float16}
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is not cast
    y = be.run(x)
    assert torch.isfinite(y).all() and (y - ref).abs().max().item() < 1e-2
    ctx = be.context(x)
    assert all(c.dtype == torch.float32 for c in ctx)
    # the two-part interface gives the one-pass result, whole and tiled
    assert (be.run_with_context(x, ctx) - y).abs().max().item() < 2e-3
    assert (be.run_with_context(x, ctx, tile=32, overlap=16) - y).abs().max().item() < 2e-3


def test_export_of_a_model_is_unchanged_by_the_precision_casts():
    """The casts are Python-level no-ops in FP32, so the exported graphs have no extra Cast."""
    onnx = pytest.importorskip("onnx")
    from hdrvideo.backends.onnx_export import export_onnx_bytes

    proto = onnx.load_from_string(export_onnx_bytes(_tiny_irnet(), "full"))
    assert not [n for n in proto.graph.node if n.op_type == "Cast"]


def test_cuda_graph_cache_captures_on_the_second_call_and_replays(monkeypatch):
    calls = []

    def fn(x):
        calls.append(tuple(x.shape))
        return x * 2

    class FakeGraph:
        def __init__(self, static_in, static_out):
            self.static_in, self.static_out = static_in, static_out

        def replay(self):
            self.static_out.copy_(self.static_in[0] * 2)

    def capture(self, args):
        static_in = [a.clone() for a in args]
        static_out = static_in[0] * 2
        self.captures += 1
        return FakeGraph(static_in, static_out), static_in, static_out

    monkeypatch.setattr(CudaGraphCache, "_capture", capture)
    cache = CudaGraphCache(fn, max_graphs=2)
    a, b = torch.ones(2, 3), torch.full((2, 3), 5.0)
    assert torch.equal(cache(a), a * 2) and cache.captures == 0 and len(calls) == 1  # first: eager
    out1 = cache(a)
    assert cache.captures == 1 and len(calls) == 1 and torch.equal(out1, a * 2)  # captured, replayed
    out2 = cache(b)  # a new shape? no: same shape → the same graph, new input copied in
    assert cache.captures == 1 and torch.equal(out2, b * 2) and torch.equal(out1, a * 2)  # outputs are copies
    for n in (4, 5, 6):  # other shapes: eager once, captured the second time, at most 2 kept
        cache(torch.ones(n, 1))
        cache(torch.ones(n, 1))
    assert cache.captures == 4 and len(cache.graphs) == 2


def test_cuda_graph_capture_failure_falls_back_to_eager(monkeypatch, caplog):
    def boom(self, args):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(CudaGraphCache, "_capture", boom)
    cache = CudaGraphCache(lambda x: x + 1)
    x = torch.zeros(3)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert torch.equal(cache(x), x + 1)
    assert cache.disabled and any("capture failed" in r.message for r in caplog.records)


def test_torch_compile_failure_falls_back_to_eager(monkeypatch, caplog):
    def broken_compile(model, **kw):
        def run(*a, **k):
            raise RuntimeError("Compiler: cc1plus not found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = _tiny_irnet()
    x = torch.rand(1, 3, 16, 24)
    with caplog.at_level(logging.WARNING):
        be = TorchBackend(model, "cpu", compile="default")
        y = be.run(x)
    assert be.compile is None and any("torch.compile" in r.message for r in caplog.records)
    assert torch.allclose(y, TorchBackend(model, "cpu").run(x))
    assert "FP32" in be.describe() and "CUDA graphs" not in be.describe()


def test_cpu_defaults_are_plain_eager_fp32():
    be = TorchBackend(_tiny_irnet(), "cpu")
    assert not be.fp16 and not be.channels_last and not be.cuda_graphs and not be.cudnn_benchmark
    assert be.describe().endswith("(FP32)")
