"""Inference backends behind one small interface (:class:`Backend`) and a registry.

A new backend is one module plus one entry in :data:`BACKENDS`.

``auto`` picks, in order: TensorRT when the ``tensorrt`` and ``onnx`` packages and a CUDA GPU are present;
ONNX Runtime with its CUDA provider; torch on CUDA; then the best CPU backend (ONNX Runtime when
installed — faster than eager torch for these convolution stacks on CPU — else torch). It logs
which it chose and why, and if a choice fails to start (a graph TensorRT cannot parse, an engine
that cannot be built — backends do that work when they are created, given the frame size — or
a GPU provider that does not load) it says so and moves on to the next candidate.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import TYPE_CHECKING

from ..errors import BackendError
from .base import Backend

if TYPE_CHECKING:  # torch loads when a backend is chosen, not when the CLI registers its commands
    import torch
    from torch import nn

__all__ = ["Backend", "BACKENDS", "create_backend", "choose_backend", "backend_candidates"]

log = logging.getLogger(__name__)

#: name → "module:Class"; imported lazily so optional packages stay optional.
BACKENDS: dict[str, str] = {
    "torch": "hdrvideo.backends.torch_backend:TorchBackend",
    "onnxruntime": "hdrvideo.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "tensorrt": "hdrvideo.backends.tensorrt_backend:TensorRTBackend",
}


def _load(name: str):
    try:
        target = BACKENDS[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r} (choose from auto, {', '.join(BACKENDS)})") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def backend_candidates(device: str | torch.device | None = None) -> list[tuple[str, str, str]]:
    """(backend, device, why) in the order ``auto`` tries them on this machine."""
    import torch

    dev = torch.device(device) if device else None
    out: list[tuple[str, str, str]] = []
    if (dev is None or dev.type == "cuda") and torch.cuda.is_available():
        cuda = str(dev) if dev is not None else "cuda"
        gpu = torch.cuda.get_device_name(dev if dev is not None and dev.index is not None else 0)
        if _has("tensorrt") and _has("onnx"):  # the engines are built from exported ONNX
            out.append(("tensorrt", cuda, f"TensorRT and CUDA GPU {gpu} present"))
        if _has("onnxruntime") and _has("onnx"):
            from .onnxruntime_backend import gpu_providers_available

            if "CUDAExecutionProvider" in gpu_providers_available():
                out.append(("onnxruntime", cuda, f"ONNX Runtime CUDA provider and GPU {gpu} present"
                            + ("" if out else " (no TensorRT)")))
        out.append(("torch", cuda, f"CUDA GPU {gpu}" + ("" if out else " (no TensorRT, no ONNX Runtime CUDA provider)")))
    why_cpu = "no CUDA GPU" if not torch.cuda.is_available() else "CPU requested"
    if _has("onnxruntime") and _has("onnx"):
        out.append(("onnxruntime", "cpu", f"{why_cpu}; ONNX Runtime is the fastest CPU backend"))
    out.append(("torch", "cpu", why_cpu + ("" if _has("onnxruntime") else "; ONNX Runtime not installed")))
    return out


def choose_backend(device: str | torch.device | None = None) -> tuple[str, str]:
    """The backend ``auto`` picks first on this machine, and why."""
    name, _, why = backend_candidates(device)[0]
    return name, why


def create_backend(name: str, model: nn.Module, device: str | torch.device | None = None, **options) -> Backend:
    """Build a backend by name (``auto`` picks the best available one and logs why)."""
    import torch

    if name == "auto":
        errors = []
        for cand, dev, why in backend_candidates(device):
            opts = dict(options)
            if cand == "onnxruntime":
                opts.setdefault("strict", True)  # a silent CPU fallback is a failure here: try the next one
            try:
                backend = _load(cand)(model, device=dev, **_accepted(cand, opts))
            except BackendError as err:
                log.warning("backend auto: %s on %s failed (%s); trying the next one", cand, dev, err)
                errors.append(f"{cand}: {err}")
                continue
            log.info("backend auto → %s on %s (%s)", cand, dev, why)
            return backend
        raise BackendError("no backend could start: " + "; ".join(errors))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return _load(name)(model, device=device, **_accepted(name, options))


def _accepted(name: str, options: dict) -> dict:
    """Drop options a backend does not take (e.g. ``threads`` for torch), so ``auto`` can pass them all."""
    import inspect

    cls = _load(name)
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return options
    return {k: v for k, v in options.items() if k in params}
