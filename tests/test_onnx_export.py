"""ONNX export and the onnxruntime backend: parity with torch, graph properties, the export cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hdrvideo import models

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from hdrvideo.backends import create_backend  # noqa: E402
from hdrvideo.backends.onnx_export import (  # noqa: E402
    cached_onnx,
    check_self_contained,
    export_onnx_bytes,
    model_digest,
)

SIZES = [(1, 3, 24, 40), (2, 3, 37, 29), (1, 3, 17, 51)]  # several sizes, odd ones included


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HDRVIDEO_CACHE", str(tmp_path_factory.getbasetemp() / "onnx-cache"))


def natural_image(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth gradients and colour waves plus a little blurred noise, in [0,1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.stack([0.5 + 0.4 * torch.sin(3 * xx + 1 + 2 * yy), 0.4 + 0.3 * torch.cos(4 * yy - 2 * xx),
                       0.3 + 0.25 * torch.sin(5 * xx * yy + 0.5)])
    noise = F.avg_pool2d(torch.rand(n, 3, h + 4, w + 4, generator=g), 5, 1)
    return (0.85 * img[None] + 0.15 * noise).clamp(0, 1)


def live_model(name: str, seed: int = 0) -> torch.nn.Module:
    """Seeded, unclamped, with the statistics paths made to matter (see test_tiling)."""
    from hdrvideo.models.irnet import CCALayer

    torch.manual_seed(seed)
    model = models.create(name, clamp_output=False).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, CCALayer):
                for p in m.conv_du.parameters():
                    p.mul_(10.0)
    return model


MAXIMA: dict[str, float] = {}


@pytest.mark.parametrize("name", models.architecture_names())
def test_torch_vs_onnxruntime_fp32_parity(name):
    model = live_model(name)
    be = create_backend("onnxruntime", model, "cpu", threads=1, fp16=False)
    assert be.name == "onnxruntime" and be.providers == ["CPUExecutionProvider"]
    worst = 0.0
    for i, shape in enumerate(SIZES):
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            ref = model(x)
        out = be.run(x)
        assert out.shape == ref.shape
        worst = max(worst, (out - ref).abs().max().item())
    MAXIMA[name] = worst
    print(f"max |torch - ort| {name}: {worst:.2e}")
    assert worst <= 1e-4, (name, worst)


def test_export_graph_properties():
    model = models.create("gpgmnet-x2").eval()
    proto = onnx.load_from_string(export_onnx_bytes(model))
    check_self_contained(proto)  # no external data
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] and dims[2] and dims[3]  # dynamic N, H, W
    resize = [n for n in proto.graph.node if n.op_type == "Resize"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in resize[0].attribute}
    assert attrs["mode"] == b"cubic" and abs(attrs["cubic_coeff_a"] + 0.75) < 1e-6
    assert attrs["coordinate_transformation_mode"] in (b"half_pixel", b"pytorch_half_pixel")
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["hdrvideo.arch"] == "gpgmnet-x2" and meta["hdrvideo.digest"] == model_digest(model)


def test_contrast_std_is_sqrt_of_mean_square():
    ops = [n.op_type for n in onnx.load_from_string(export_onnx_bytes(models.create("irnet-1-48").eval())).graph.node]
    assert "Sqrt" in ops and ops.count("ReduceMean") == 2
    assert not {"ReduceVariance", "BatchNormalization", "InstanceNormalization"} & set(ops)


def test_export_cache_hits_and_rebuilds_corrupt_files(tmp_path, monkeypatch, caplog):
    model = models.create("irnet-1-48").eval()
    path = cached_onnx(model, "full", cache_dir=tmp_path)
    assert path.is_file() and path.with_suffix(".onnx.json").is_file()
    import hdrvideo.backends.onnx_export as ox

    def boom(*a, **k):
        raise AssertionError("should have come from the cache")

    monkeypatch.setattr(ox, "export_onnx_bytes", boom)
    assert cached_onnx(model, "full", cache_dir=tmp_path) == path
    # other weights → another file
    model2 = models.create("irnet-1-48").eval()
    monkeypatch.undo()
    monkeypatch.setenv("HDRVIDEO_CACHE", str(tmp_path))
    assert cached_onnx(model2, "full", cache_dir=tmp_path) != path
    # a truncated file is rebuilt with a warning
    path.write_bytes(path.read_bytes()[:100])
    with caplog.at_level("WARNING"):
        again = cached_onnx(model, "full", cache_dir=tmp_path)
    assert again == path and onnx.load(str(path)) is not None
    assert any("stale or corrupt" in r.message for r in caplog.records)


@pytest.mark.parametrize("name", ["irnet-2", "gpgmnet-x2", "agcm"])
def test_tiled_onnxruntime_is_exact_with_context_graph(name):
    model = live_model(name, seed=1)
    x = natural_image(1, 48, 70)
    with torch.no_grad():
        ref = model(x)
    be = create_backend("onnxruntime", model, "cpu", threads=1, fp16=False)
    out = be.run_tiled(x, tile=32, overlap=2 * min(model.receptive_radius, 12) + 4)
    assert (out - ref).abs().max().item() <= 1e-4


def test_model_digest_tracks_weights_and_config():
    torch.manual_seed(0)
    a = models.create("irnet-1-48")
    b = models.create("irnet-1-48")
    b.load_state_dict(a.state_dict())
    assert model_digest(a) == model_digest(b)
    b.colour_domain = "ycrcb601"
    assert model_digest(a) != model_digest(b)
    with torch.no_grad():
        next(a.parameters()).add_(1e-3)
    assert model_digest(a) != model_digest(models.create("irnet-1-48"))
