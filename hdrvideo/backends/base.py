"""The one interface every inference backend implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Backend(Protocol):
    """Runs one network graph: (N,3,H,W) float → (N,3,sH,sW) float, on ``device``."""

    name: str
    device: torch.device

    def run(self, x: Tensor) -> Tensor: ...
