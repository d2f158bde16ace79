"""The FP16 graph pass: statistics and reductions stay FP32, and FP16 stays close to FP32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hdrvideo import models

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from hdrvideo.backends.fp16 import (  # noqa: E402
    REDUCTION_OPS,
    convert_to_fp16,
    default_settings,
    fp32_reduction_report,
    node_precisions,
)
from hdrvideo.backends.onnx_export import export_onnx_bytes  # noqa: E402

from test_onnx_export import live_model, natural_image  # noqa: E402

FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


def _session(blob: bytes):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])


def _feeds(model, x, kind):
    feeds = {"x": x.numpy()}
    if kind == "tile":
        with torch.no_grad():
            ctx = model.global_context(torch.from_numpy(feeds["x"]))
        feeds.update({f"ctx{i}": c.numpy() for i, c in enumerate(ctx)})
    return feeds


@pytest.mark.parametrize("name", models.architecture_names())
def test_fp16_graph_runs_close_to_fp32_with_fp32_reductions(name):
    model = live_model(name)
    worst = 0.0
    for kind in ("full", "tile"):
        blob = export_onnx_bytes(model, kind)
        half = convert_to_fp16(onnx.load_from_string(blob))
        # the reductions (ReduceMean for mean/variance, pooled statistics) read and write FP32
        report = fp32_reduction_report(half)
        if kind == "full":
            assert report, "every architecture has image statistics"
        for node, op, ins, outs in report:
            assert ins == [FLOAT] and outs == [FLOAT], (node, op, ins, outs)
        # and the bulk of the network really is FP16 (AGCM: its 3 per-pixel convs; the other
        # convs are its condition network, which only feeds statistics and stays FP32)
        inits = {t.name: t.data_type for t in half.graph.initializer}
        conv_w = [inits[n.input[1]] for n in half.graph.node if n.op_type == "Conv" and n.input[1] in inits]
        want = 3 if name == "agcm" else len(conv_w) // 2
        assert conv_w.count(FLOAT16) >= want, (name, kind, conv_w)
        # I/O stays FP32
        assert all(i.type.tensor_type.elem_type == FLOAT for i in half.graph.input)
        assert all(o.type.tensor_type.elem_type == FLOAT for o in half.graph.output)
        x = natural_image(2, 45, 61, seed=3)
        feeds = _feeds(model, x, kind)
        a = _session(blob).run(None, feeds)[0]
        b = _session(half.SerializeToString()).run(None, feeds)[0]
        assert b.dtype == np.float32
        worst = max(worst, float(np.abs(a - b).max()))
    print(f"max |fp16 - fp32| {name}: {worst:.2e}")
    assert worst <= 2e-3, (name, worst)


def test_variance_chain_and_what_follows_the_statistics_stay_fp32():
    """IRNet's CCA: (x-m), (x-m)², both ReduceMeans, the clamp, sqrt, s+m and the MLP are FP32."""
    proto = onnx.load_from_string(export_onnx_bytes(models.create("irnet-1-48").eval()))
    prec = node_precisions(proto)
    by_op: dict[str, set[str]] = {}
    for i, p in prec.items():
        by_op.setdefault(proto.graph.node[i].op_type, set()).add(p)
    assert by_op["ReduceMean"] == {"fp32"}
    assert by_op["Sub"] == {"fp32"} and by_op["Sqrt"] == {"fp32"} and by_op["Sigmoid"] == {"fp32"}
    assert by_op["Relu"] == {"fp32"}  # the attention MLP on (N,C,1,1)
    assert "fp16" in by_op["Conv"] and "fp16" in by_op["LeakyRelu"]  # full-resolution work is FP16
    # the attention is applied to the FP16 feature map in FP16 (one Mul per block)
    muls = [prec[i] for i, n in enumerate(proto.graph.node) if n.op_type == "Mul" and i in prec]
    assert "fp16" in muls and "fp32" in muls


def test_agcm_condition_network_is_all_fp32():
    proto = onnx.load_from_string(export_onnx_bytes(models.create("agcm").eval()))
    prec = node_precisions(proto)
    nodes = proto.graph.node
    pools = [prec[i] for i, n in enumerate(nodes) if n.op_type == "AveragePool"]
    assert pools and set(pools) == {"fp32"}  # the whole condition branch feeds only statistics
    base = [prec[i] for i, n in enumerate(nodes) if n.op_type == "Conv" and prec.get(i) == "fp16"]
    assert len(base) == 3  # conv_first, HRconv, conv_last: the per-pixel base network


def test_fp16_io_option_and_settings():
    proto = onnx.load_from_string(export_onnx_bytes(models.create("irnet-1-48").eval()))
    half = convert_to_fp16(proto, keep_io_types=False)
    assert half.graph.input[0].type.tensor_type.elem_type == FLOAT16
    assert half.graph.output[0].type.tensor_type.elem_type == FLOAT16
    x = natural_image(1, 20, 24).numpy().astype(np.float16)
    y = _session(half.SerializeToString()).run(None, {"x": x})[0]
    assert y.dtype == np.float16 and np.isfinite(y).all()
    s = default_settings()
    assert s["keep_io_types"] and set(s["fp32_ops"]) == set(REDUCTION_OPS) and s["version"] >= 1


def test_large_frame_statistics_do_not_overflow():
    """A 540×960 frame: the channel sums behind the means are ~259k, beyond FP16's 65,504."""
    model = live_model("irnet-1-48")
    blob = export_onnx_bytes(model)
    half = convert_to_fp16(onnx.load_from_string(blob)).SerializeToString()
    x = np.full((1, 3, 540, 960), 0.9, np.float32)
    a = _session(blob).run(None, {"x": x})[0]
    b = _session(half).run(None, {"x": x})[0]
    assert np.isfinite(b).all() and float(np.abs(a - b).max()) <= 2e-3
