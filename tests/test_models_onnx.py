"""ONNX export smoke test for every registered architecture (opset 17, dynamic N/H/W)."""

from __future__ import annotations

import io
import warnings

import pytest
import torch

from hdrvideo import models

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _export(model: torch.nn.Module, x: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            buf,
            opset_version=17,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "sh", 3: "sw"}},
            dynamo=False,
        )
    return buf.getvalue()


def _check(model: torch.nn.Module, sizes, atol: float = 1e-4) -> onnx.ModelProto:
    blob = _export(model, torch.rand(1, 3, 24, 40))
    proto = onnx.load_from_string(blob)
    onnx.checker.check_model(proto)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
    s = model.scale
    for shape in sizes:
        x = torch.rand(*shape)
        with torch.no_grad():
            ref = model(x).numpy()
        out = sess.run(None, {"x": x.numpy()})[0]
        assert out.shape == (shape[0], 3, shape[2] * s, shape[3] * s)
        assert abs(out - ref).max() <= atol, (shape, abs(out - ref).max())
    return proto


@pytest.mark.parametrize("name", models.architecture_names())
def test_onnx_export_runs_in_ort_at_two_sizes(name):
    torch.manual_seed(0)
    # unclamped so the comparison sees the raw network output, not saturated values
    model = models.create(name, clamp_output=False).eval()
    proto = _check(model, [(1, 3, 24, 40), (2, 3, 37, 29)])
    ops = {n.op_type for n in proto.graph.node}
    assert "Resize" not in ops or name.startswith("gpgmnet")  # only GPGMNet's bicubic skip
    assert not any(i.type.tensor_type.shape.dim[2].dim_value for i in proto.graph.input)  # dynamic H


def test_onnx_export_with_clamp_and_ycrcb_domain():
    torch.manual_seed(0)
    model = models.create("irnet-2", colour_domain="ycrcb601").eval()
    _check(model, [(1, 3, 20, 30), (1, 3, 33, 17)])


def test_onnx_gpgmnet_bicubic_is_resize_cubic():
    proto = onnx.load_from_string(_export(models.create("gpgmnet-x2").eval(), torch.rand(1, 3, 24, 40)))
    resize = [n for n in proto.graph.node if n.op_type == "Resize"]
    assert len(resize) == 1
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in resize[0].attribute}
    assert attrs["mode"] == b"cubic"
    assert abs(attrs["cubic_coeff_a"] + 0.75) < 1e-6
    assert attrs["coordinate_transformation_mode"] in (b"half_pixel", b"pytorch_half_pixel")


def test_onnx_agcm_plain_bicubic_condition_exports():
    torch.manual_seed(0)
    model = models.create("agcm", condition_resize="bicubic", clamp_output=False).eval()
    _check(model, [(1, 3, 64, 48), (1, 3, 40, 72)])
