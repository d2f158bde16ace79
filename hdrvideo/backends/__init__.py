"""Inference backends behind one small interface (:class:`Backend`) and a registry.

A new backend is one module plus one entry in :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib
import logging

import torch
from torch import nn

from ..errors import BackendError
from .base import Backend

__all__ = ["Backend", "BACKENDS", "create_backend", "choose_backend"]

log = logging.getLogger(__name__)

#: name → "module:Class"; imported lazily so optional packages stay optional.
BACKENDS: dict[str, str] = {
    "torch": "hdrvideo.backends.torch_backend:TorchBackend",
}


def _load(name: str):
    try:
        target = BACKENDS[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r} (choose from auto, {', '.join(BACKENDS)})") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def choose_backend(device: str | torch.device | None = None) -> tuple[str, str]:
    """The backend ``auto`` picks on this machine, and why."""
    dev = torch.device(device) if device else None
    if dev is None or dev.type == "cuda":
        if torch.cuda.is_available():
            return "torch", f"CUDA GPU {torch.cuda.get_device_name(0)}"
    return "torch", "CPU"


def create_backend(name: str, model: nn.Module, device: str | torch.device | None = None, **options) -> Backend:
    """Build a backend by name (``auto`` picks the best available one and logs why)."""
    if name == "auto":
        name, why = choose_backend(device)
        log.info("backend auto → %s (%s)", name, why)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return _load(name)(model, device=device, **options)
