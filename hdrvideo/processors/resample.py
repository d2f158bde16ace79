"""Separable image resampling in torch (Lanczos), device-agnostic.

Used to upscale in the classical presets and to fit a model's output into the target box.
Taps are gathered per output sample (banded), never as dense matrices, so a 4K frame
costs O(taps × pixels).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

__all__ = ["resize_lanczos"]


@lru_cache(maxsize=64)
def _lanczos_taps(n_in: int, n_out: int, a: int) -> tuple[Tensor, Tensor]:
    """(index, weight) tensors of shape (n_out, taps) for a Lanczos-``a`` resize of one axis.

    Sample centres are aligned as in pixel-centre convention (x_in = (x_out + ½)·n_in/n_out − ½).
    When shrinking, the kernel is stretched by n_in/n_out, so it also low-passes (antialias).
    """
    scale = n_out / n_in
    support = a / min(scale, 1.0)
    taps = int(math.ceil(support)) * 2 + 1
    out = torch.arange(n_out, dtype=torch.float64)
    centre = (out + 0.5) / scale - 0.5
    first = torch.floor(centre - support).to(torch.int64) + 1
    idx = first[:, None] + torch.arange(taps, dtype=torch.int64)[None, :]
    x = (idx.to(torch.float64) - centre[:, None]) * min(scale, 1.0)
    w = torch.where(x.abs() < a, torch.sinc(x) * torch.sinc(x / a), torch.zeros_like(x))
    w = w / w.sum(dim=1, keepdim=True)
    return idx.clamp(0, n_in - 1), w


def _resize_axis(x: Tensor, dim: int, n_out: int, a: int) -> Tensor:
    n_in = x.shape[dim]
    if n_in == n_out:
        return x
    idx, w = _lanczos_taps(n_in, n_out, a)
    idx, w = idx.to(x.device), w.to(device=x.device, dtype=x.dtype)
    taps = idx.shape[1]
    gathered = x.index_select(dim, idx.reshape(-1))  # (..., n_out*taps, ...)
    shape = list(x.shape)
    shape[dim : dim + 1] = [n_out, taps]
    gathered = gathered.reshape(shape)
    wshape = [1] * len(shape)
    wshape[dim], wshape[dim + 1] = n_out, taps
    return (gathered * w.reshape(wshape)).sum(dim=dim + 1)


def resize_lanczos(x: Tensor, height: int, width: int, a: int = 3) -> Tensor:
    """Resize ``(..., H, W)`` to ``(..., height, width)`` with a separable Lanczos-``a`` filter.

    Edges replicate. The result is not clipped (Lanczos rings slightly beyond the input range).
    """
    out = _resize_axis(x, x.dim() - 1, width, a)
    return _resize_axis(out, x.dim() - 2, height, a)
