"""ONNX export of the networks, and a cache of exported graphs.

Three graph kinds are exported from one model:

* ``"full"``  — ``x`` (N,3,H,W) → ``y`` (N,3,sH,sW): the whole network, what untiled inference runs.
* ``"context"`` — ``x`` → ``ctx0 … ctxK``: the model's image-level statistics
  (:meth:`~hdrvideo.models.ITMModel.global_context`: IRNet's attention vectors, GPGMNet's prior,
  AGCM's condition vector), computed once on the whole frame.
* ``"tile"`` — ``x``, ``ctx0 … ctxK`` → ``y``: the network with those statistics fixed.

``context`` + ``tile`` make tiled inference with a graph backend (ONNX Runtime, TensorRT)
*exact*, as in the torch backend: without them every tile would compute its own statistics.

Every graph has dynamic batch, height and width (``n``, ``h``, ``w``), opset ≥ 17, and is one
self-contained file (weights embedded, never an ``.onnx.data`` sidecar). The networks are written
so that they export to plain ops: the contrast std as ``sqrt(mean((x-m)²))`` (ReduceMean, Sub,
Mul, Sqrt — no ReduceVar/training-mode BatchNorm), GPGMNet's bicubic skip as ``Resize``
``mode=cubic``, ``cubic_coeff_a=-0.75``, ``half_pixel`` (torch's bicubic), AGCM's MATLAB-style
condition resize as a strided depthwise Conv.

Exported graphs are cached (:func:`cached_onnx`) under ``<cache>/onnx/``, keyed by a digest of
the model's weights and configuration, the graph kind, the opset and the exporter version.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import BackendError

__all__ = [
    "OPSET",
    "GRAPH_KINDS",
    "export_onnx",
    "export_onnx_bytes",
    "model_digest",
    "onnx_key",
    "cached_onnx",
    "context_arity",
    "check_self_contained",
]

log = logging.getLogger(__name__)

#: default opset: 17 has LayerNormalization and Resize with cubic_coeff_a; TRT 10/11 and ORT ≥ 1.14 run it
OPSET = 17
GRAPH_KINDS = ("full", "context", "tile")
#: bumped when the export procedure changes in a way that changes the graph
EXPORT_FORMAT = 1


def _require_onnx():
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise BackendError("ONNX export needs the 'onnx' package: pip install 'hdrvideo[onnx]'") from None
    return onnx


class _ContextGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.model.global_context(x))


class _TileGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, *ctx: Tensor) -> Tensor:
        return self.model(x, context=tuple(ctx))


def _sample_input(model: nn.Module, height: int = 48, width: int = 64) -> Tensor:
    g = torch.Generator().manual_seed(0)
    p = next(iter(model.parameters()), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    device = p.device if p is not None else torch.device("cpu")
    return torch.rand(1, 3, height, width, generator=g).to(device=device, dtype=dtype)


def context_arity(model: nn.Module) -> int:
    """How many context tensors the model's ``global_context`` returns (0: none)."""
    if not hasattr(model, "global_context"):
        return 0
    with torch.inference_mode():
        ctx = model.global_context(_sample_input(model, 32, 32))
    return 0 if ctx is None else len(ctx)


def export_onnx_bytes(model: nn.Module, kind: str = "full", opset: int = OPSET) -> bytes:
    """Export ``model`` (eval mode, FP32, CPU) as a self-contained ONNX graph; returns its bytes."""
    onnx = _require_onnx()
    if kind not in GRAPH_KINDS:
        raise ValueError(f"graph kind must be one of {GRAPH_KINDS}, not {kind!r}")
    if opset < 17:
        raise ValueError("opset must be ≥ 17")
    import copy

    model = copy.deepcopy(model).eval().float().to("cpu")  # never move/cast the caller's model
    x = _sample_input(model)
    dyn_x = {0: "n", 2: "h", 3: "w"}
    if kind == "full":
        module: nn.Module = model
        args: tuple = (x,)
        input_names, output_names = ["x"], ["y"]
        dynamic_axes: dict[str, dict[int, str]] = {"x": dyn_x, "y": {0: "n", 2: "sh", 3: "sw"}}
    else:
        with torch.inference_mode():
            ctx = model.global_context(x)
        if ctx is None:
            raise BackendError(f"{getattr(model, 'arch', 'model')} has no global context; export kind 'full' only")
        ctx = tuple(c.clone() for c in ctx)
        names = [f"ctx{i}" for i in range(len(ctx))]
        if kind == "context":
            module, args = _ContextGraph(model), (x,)
            input_names, output_names = ["x"], names
            dynamic_axes = {"x": dyn_x, **{n: {0: "n"} for n in names}}
        else:
            module, args = _TileGraph(model), (x, *ctx)
            input_names, output_names = ["x", *names], ["y"]
            dynamic_axes = {"x": dyn_x, "y": {0: "n", 2: "sh", 3: "sw"}, **{n: {0: "n"} for n in names}}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            buf,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load_from_string(buf.getvalue())
    meta = {
        "hdrvideo.arch": str(getattr(model, "arch", "")),
        "hdrvideo.scale": str(getattr(model, "scale", 1)),
        "hdrvideo.colour_domain": str(getattr(model, "colour_domain", "rgb")),
        "hdrvideo.graph": kind,
        "hdrvideo.digest": model_digest(model),
    }
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "hdrvideo"
    check_self_contained(proto)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def check_self_contained(proto: Any) -> None:
    """Raise if any initializer lives in an external data file."""
    from onnx import TensorProto

    for t in proto.graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:
            raise BackendError(f"exported ONNX keeps tensor {t.name!r} in external data; expected one file")


def export_onnx(model: nn.Module, path: str | os.PathLike[str], kind: str = "full", opset: int = OPSET,
                fp16: bool = False) -> Path:
    """Export to ``path`` (atomically); ``fp16`` converts it with :func:`~.fp16.convert_to_fp16`."""
    blob = export_onnx_bytes(model, kind, opset)
    if fp16:
        from .fp16 import convert_to_fp16_bytes

        blob = convert_to_fp16_bytes(blob)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from .engine_cache import atomic_write_bytes

    atomic_write_bytes(path, blob)
    return path


# --------------------------------------------------------------------------------------
# cache of exported graphs
# --------------------------------------------------------------------------------------


def model_digest(model: nn.Module) -> str:
    """SHA-256 of what determines the exported graph: class, config and every weight's bytes.

    Computed from the state_dict itself (not a file), so it works for models built in memory
    and for any weights format.
    """
    h = hashlib.sha256()
    cfg = {
        "class": type(model).__qualname__,
        "arch": str(getattr(model, "arch", "")),
        "scale": int(getattr(model, "scale", 1)),
        "colour_domain": str(getattr(model, "colour_domain", "")),
        "clamp_output": bool(getattr(model, "clamp_output", True)),
        "condition_resize": str(getattr(model, "condition_resize", "")),
    }
    h.update(json.dumps(cfg, sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        if t.dtype == torch.bfloat16:
            t = t.float()
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def onnx_key(digest: str, kind: str = "full", opset: int = OPSET, fp16: bool = False,
             fp16_settings: dict | None = None) -> dict[str, Any]:
    """The fields that identify a cached exported graph."""
    key: dict[str, Any] = {
        "model_digest": digest,
        "graph": kind,
        "opset": int(opset),
        "export_format": EXPORT_FORMAT,
        "torch": torch.__version__.split("+")[0],
        "fp16": bool(fp16),
    }
    if fp16:
        from .fp16 import default_settings

        key["fp16_settings"] = fp16_settings or default_settings()
    return key


def cached_onnx(model: nn.Module, kind: str = "full", opset: int = OPSET, fp16: bool = False,
                cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of the exported (and optionally FP16-converted) graph, exporting it on a cache miss."""
    from .engine_cache import EngineCache, key_digest

    cache = EngineCache(cache_dir)
    key = onnx_key(model_digest(model), kind, opset, fp16)
    arch = str(getattr(model, "arch", "") or "model")
    name = f"{arch}-{kind}{'-fp16' if fp16 else ''}-{key_digest(key)[:16]}.onnx"
    path = cache.root / "onnx" / name

    def build() -> bytes:
        log.info("exporting %s (%s graph%s) to ONNX", arch, kind, ", FP16" if fp16 else "")
        blob = export_onnx_bytes(model, kind, opset)
        if fp16:
            from .fp16 import convert_to_fp16_bytes

            blob = convert_to_fp16_bytes(blob)
        return blob

    return cache.get_or_create_file(path, key, build)
