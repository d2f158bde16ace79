"""The one interface of the process stage."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Processor(Protocol):
    """Maps display-referred SDR to HDR10 signal values, on one device.

    ``__call__`` takes (N,3,H,W) BT.709 R'G'B' in [0,1] and returns (N,3,scale·H,scale·W)
    PQ BT.2020 R'G'B' in [0,1], on the same device.
    """

    scale: int
    device: torch.device
    description: str

    def __call__(self, rgb: Tensor) -> Tensor: ...
