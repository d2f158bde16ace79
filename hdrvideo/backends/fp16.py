"""FP32 → FP16 conversion of an ONNX graph that keeps image statistics in FP32.

Why a graph pass: TensorRT 11 removed ``BuilderFlag.FP16`` (and 10.12+ deprecates weak typing);
precision is now expressed in the graph, and the network is built strongly typed. One FP16 ONNX
therefore serves TRT 10 and 11 with the same code path (and ORT's CUDA EP too).

Why not ``onnxconverter_common.float16``: its ``op_block_list`` keeps the listed ops in FP32 but
casts their *inputs* down and back up, so the variance chain ``(x - m)²`` that feeds a
ReduceMean would still be computed in FP16 (a feature 256 away from its mean squares past
FP16's 65,504), and what is computed *from* the statistics (the attention MLP, GPGMNet's
modulation Linear) would flip back to FP16 for no gain. It is also one more dependency (with a
history of protobuf pins) on the machines that build engines. The policy we need fits a small
pass over the ``onnx`` protobuf, and its settings become part of the engine-cache key.

The policy
----------
1. **Reductions stay FP32**: ReduceMean/ReduceSum/… (the contrast-attention mean and variance,
   InstanceNorm written as reductions, global average pooling), InstanceNormalization,
   LayerNormalization, GroupNormalization, GlobalAveragePool. A 960×540 channel sum is 259,200:
   far beyond FP16.
2. **Statistics-only subgraphs stay FP32**: a node all of whose consumers are FP32 reductions or
   other such nodes (``(x - m)``, ``(x - m)²``, AGCM's whole condition network, GPGMNet's
   global-priors extractor). Found by a backward pass.
3. **What is computed from statistics stays FP32**: a node whose float inputs all come from
   FP32 nodes (or from statistics inputs such as the ``ctx*`` inputs of a tile graph) — the
   sqrt/clamp, the attention MLP on (N,C,1,1), the modulation Linear. These tensors are tiny.
4. **Everything else is FP16**: the full-resolution convolutions and activations. Casts are
   inserted where the two regions meet (one per tensor and direction).
5. I/O stays FP32 by default (``keep_io_types``), so the same host code feeds either graph.
6. ``Resize`` keeps its ``roi``/``scales`` inputs FP32 (``scales`` must be float32).

:func:`fp32_reduction_report` lists every reduction node with its input/output types, so tests
assert on the graph that the reductions are FP32.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import numpy as np

__all__ = [
    "FP16_VERSION",
    "REDUCTION_OPS",
    "default_settings",
    "convert_to_fp16",
    "convert_to_fp16_bytes",
    "fp32_reduction_report",
    "node_precisions",
]

log = logging.getLogger(__name__)

#: bumped whenever the conversion's output changes (it is part of the engine-cache key)
FP16_VERSION = 1

REDUCTION_OPS = frozenset({
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceProd", "GlobalAveragePool", "GlobalLpPool", "InstanceNormalization",
    "LayerNormalization", "GroupNormalization", "Softmax", "LogSoftmax",
})

#: ops whose (float) inputs are read for their shape only: never cast them
_SHAPE_ONLY = frozenset({"Shape", "Size"})
#: (op, input index) that must stay float32 whatever the node's precision
_KEEP_FP32_INPUTS = {("Resize", 1), ("Resize", 2)}

_FLOAT, _FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT / FLOAT16
_FP16_MAX = 65504.0


def default_settings(keep_io_types: bool = True, stat_inputs: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The settings recorded in cache keys (changing any changes the converted graph)."""
    return {
        "version": FP16_VERSION,
        "keep_io_types": bool(keep_io_types),
        "fp32_ops": sorted(REDUCTION_OPS),
        "stat_inputs": "ctx*" if stat_inputs is None else list(stat_inputs),
        "stat_only_fp32": True,
        "from_stats_fp32": True,
    }


def _elem_types(model) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    types: dict[str, int] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        types[vi.name] = vi.type.tensor_type.elem_type
    for t in g.initializer:
        types[t.name] = t.data_type
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def _hoist_constants(graph) -> None:
    """Constant nodes holding a tensor become initializers (so they convert like weights)."""
    keep = []
    for n in graph.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            t = n.attribute[0].t
            t.name = n.output[0]
            graph.initializer.append(t)
        else:
            keep.append(n)
    del graph.node[:]
    graph.node.extend(keep)


def node_precisions(model, stat_inputs: tuple[str, ...] | None = None) -> dict[int, str]:
    """Index of every node with float data → ``"fp32"`` or ``"fp16"`` under the policy above."""
    g = model.graph
    types = _elem_types(model)
    init = {t.name for t in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    graph_outputs = {o.name for o in g.output}
    if stat_inputs is None:
        stat_inputs = tuple(i.name for i in g.input if i.name.startswith("ctx"))
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, n in enumerate(g.node):
        for name in n.input:
            if name:
                consumers[name].append(i)

    def is_float(name: str) -> bool:
        return bool(name) and types.get(name) == _FLOAT

    float_nodes = {i for i, n in enumerate(g.node)
                   if any(is_float(o) for o in n.output) and n.op_type not in _SHAPE_ONLY}
    fp32: set[int] = {i for i in float_nodes if g.node[i].op_type in REDUCTION_OPS}

    # 2. backward: nodes that only feed FP32 statistics (reverse topological order)
    for i in reversed(range(len(g.node))):
        if i in fp32 or i not in float_nodes:
            continue
        n = g.node[i]
        outs = [o for o in n.output if is_float(o)]
        if not outs or any(o in graph_outputs for o in outs):
            continue
        users = [c for o in outs for c in consumers.get(o, [])]
        data_users = [c for c in users if g.node[c].op_type not in _SHAPE_ONLY]
        if data_users and all(c in fp32 for c in data_users):
            fp32.add(i)

    # 3. forward: nodes computed only from FP32 statistics (topological order)
    producer = {o: i for i, n in enumerate(g.node) for o in n.output if o}
    stat_sources = set(stat_inputs)
    for i, n in enumerate(g.node):
        if i in fp32 or i not in float_nodes:
            continue
        data_in = [x for k, x in enumerate(n.input)
                   if is_float(x) and x not in init and (n.op_type, k) not in _KEEP_FP32_INPUTS]
        if data_in and all((producer.get(x) in fp32) or (x in stat_sources) for x in data_in):
            fp32.add(i)
    return {i: ("fp32" if i in fp32 else "fp16") for i in float_nodes}


def convert_to_fp16(model, keep_io_types: bool = True, stat_inputs: tuple[str, ...] | None = None):
    """Return a converted copy of ``model`` (an ``onnx.ModelProto``); see the module docstring."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    _hoist_constants(g)
    del g.value_info[:]
    types = _elem_types(model)
    prec = node_precisions(model, stat_inputs)
    init = {t.name: t for t in g.initializer}
    graph_inputs = {i.name for i in g.input}

    # where does every float tensor live, before any cast: "fp32" or "fp16"
    home: dict[str, str] = {}
    for name in graph_inputs:
        if types.get(name) == _FLOAT:
            home[name] = "fp32" if keep_io_types else "fp16"
    for i, n in enumerate(g.node):
        for o in n.output:
            if o and types.get(o) == _FLOAT:
                home[o] = prec.get(i, "fp32")

    # initializers: convert those read only by FP16 slots, duplicate the shared ones
    wanted: dict[str, set[str]] = defaultdict(set)
    for i, n in enumerate(g.node):
        p = prec.get(i)
        for k, x in enumerate(n.input):
            if x in init and init[x].data_type == _FLOAT and n.op_type not in _SHAPE_ONLY:
                wanted[x].add("fp32" if p != "fp16" or (n.op_type, k) in _KEEP_FP32_INPUTS else "fp16")
    renamed: dict[str, str] = {}
    for name, want in wanted.items():
        if "fp16" not in want:
            continue
        arr = numpy_helper.to_array(init[name])
        if np.abs(arr).max(initial=0.0) > _FP16_MAX:
            log.warning("initializer %s exceeds the FP16 range; clamped", name)
        half = numpy_helper.from_array(np.clip(arr, -_FP16_MAX, _FP16_MAX).astype(np.float16), name)
        if want == {"fp16"}:
            init[name].CopyFrom(half)
        else:
            half.name = name + "__fp16"
            g.initializer.append(half)
            renamed[name] = half.name

    casts: dict[tuple[str, str], str] = {}
    new_nodes = []

    def cast_of(name: str, to: str) -> str:
        if (name, to) not in casts:
            out = f"{name}__to_{to}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=_FLOAT16 if to == "fp16" else _FLOAT,
                                              name=f"cast_{to}_{len(casts)}"))
            casts[(name, to)] = out
        return casts[(name, to)]

    for i, n in enumerate(g.node):
        p = prec.get(i)
        if p is not None or any(home.get(x) for x in n.input):
            for k, x in enumerate(n.input):
                if not x or n.op_type in _SHAPE_ONLY:
                    continue
                need = "fp32" if (p != "fp16" or (n.op_type, k) in _KEEP_FP32_INPUTS) else "fp16"
                if x in init:
                    if need == "fp16" and x in renamed:
                        n.input[k] = renamed[x]
                    continue
                have = home.get(x)
                if have is not None and have != need:
                    n.input[k] = cast_of(x, need)
            if n.op_type == "Cast":  # an explicit cast to float inside the FP16 region
                for a in n.attribute:
                    if a.name == "to" and a.i == _FLOAT and p == "fp16":
                        a.i = _FLOAT16
        new_nodes.append(n)

    # graph outputs
    for out in g.output:
        if types.get(out.name) != _FLOAT:
            continue
        have = home.get(out.name, "fp32")
        want = "fp32" if keep_io_types else "fp16"
        if have != want:
            inner = f"{out.name}__{have}"
            for n in new_nodes:
                for k, x in enumerate(n.output):
                    if x == out.name:
                        n.output[k] = inner
                for k, x in enumerate(n.input):
                    if x == out.name:
                        n.input[k] = inner
            new_nodes.append(helper.make_node("Cast", [inner], [out.name], to=_FLOAT16 if want == "fp16" else _FLOAT,
                                              name=f"cast_output_{out.name}"))
        if not keep_io_types:
            out.type.tensor_type.elem_type = _FLOAT16
    if not keep_io_types:
        for inp in g.input:
            if types.get(inp.name) == _FLOAT:
                inp.type.tensor_type.elem_type = _FLOAT16

    del g.node[:]
    g.node.extend(new_nodes)
    # drop initializers nobody reads any more (converted copies replaced the originals)
    used = {x for n in g.node for x in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    entry = model.metadata_props.add()
    entry.key, entry.value = "hdrvideo.fp16", f"v{FP16_VERSION}; reductions and statistics in FP32"
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    return model


def convert_to_fp16_bytes(blob: bytes, keep_io_types: bool = True) -> bytes:
    import onnx

    return convert_to_fp16(onnx.load_from_string(blob), keep_io_types=keep_io_types).SerializeToString()


def fp32_reduction_report(model) -> list[tuple[str, str, list[int], list[int]]]:
    """(node name, op, input elem types, output elem types) of every reduction-type node."""
    types = _elem_types(model)
    out = []
    for n in model.graph.node:
        if n.op_type in REDUCTION_OPS:
            out.append((n.name, n.op_type, [types.get(x, 0) for x in n.input[:1]], [types.get(x, 0) for x in n.output]))
    return out
