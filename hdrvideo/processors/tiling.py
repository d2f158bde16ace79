"""Tiled inference with smooth blending, for networks that do not fit a whole frame.

:func:`tiled_forward` is generic: it splits an (N,C,H,W) input into overlapping tiles, runs any
callable on each, and blends the (upscaled) outputs with a raised-cosine window, normalised by the
sum of the weights, so there are no seams.

Blending window (per axis, per tile side that touches another tile, in input pixels ``p``
measured from the tile's edge): weight 0 for p ≤ ``margin``, a raised-cosine ramp from
``margin`` to ``overlap − margin``, then 1.  Sides on the image border get weight 1.  So the
outermost ``margin`` pixels of each tile — the ones whose receptive field was cut by the tile
edge — never contribute, and with ``margin`` ≥ the network's receptive-field radius a purely
convolutional network's tiled output equals its full-frame output.  Consecutive tiles overlap by
at least ``overlap`` pixels (positions are spread evenly), which guarantees that every pixel has
a tile with weight > 0.

Global statistics.  Networks such as IRNet (contrast-aware channel attention: per-channel mean
and std over the whole image), GPGMNet (global priors) and AGCM (global condition vector) are
*not* purely convolutional: run tile by tile they would compute those statistics per tile, so
tiles would disagree (visible as a tile-wise colour/contrast shift, far above 1e-3).
:func:`tiled_model_forward` solves this for any model implementing
``global_context(x, max_side=None)`` and ``forward(x, context=...)`` (all of
``hdrvideo.models``): it computes the image-level quantities once on the whole frame — exact —
or, with ``context_max_side``, on a downscaled copy (bounded memory, approximate), then runs
every tile with those quantities fixed.  The computation of the context touches the whole frame
but only the part of the network that produces the statistics (IRNet's head and blocks; the
small GPEM of GPGMNet; AGCM's ×1/4 condition network).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with ≥ ``overlap`` overlap.

    The smallest number of tiles is used and they are spread evenly (integer floor), so no tile
    sticks out and the last one ends exactly at ``length``.
    """
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = math.ceil((length - overlap) / stride)
    n = max(n, 2)
    return [i * (length - tile) // (n - 1) for i in range(n)]


def _ramp(p: Tensor, lo: float, hi: float) -> Tensor:
    if hi <= lo:
        return (p > lo).to(p.dtype)
    t = ((p - lo) / (hi - lo)).clamp(0.0, 1.0)
    return 0.5 - 0.5 * torch.cos(math.pi * t)


def _window_1d(start: int, size: int, length: int, scale: int, overlap: int, margin: float, device) -> Tensor:
    """Blending weights (size·scale,) for a tile [start, start+size) of an axis of ``length``."""
    j = torch.arange(size * scale, device=device, dtype=torch.float64)
    p_left = (j + 0.5) / scale  # distance from the tile's left edge, in input pixels
    p_right = size - p_left
    w = torch.ones_like(j)
    if overlap > 0:
        if start > 0:
            w = w * _ramp(p_left, margin, overlap - margin)
        if start + size < length:
            w = w * _ramp(p_right, margin, overlap - margin)
    return w.float()


def tiled_forward(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    scale: int,
    tile: int,
    overlap: int,
    *,
    margin: float | None = None,
) -> Tensor:
    """Run ``fn`` on overlapping tiles of ``x`` (N,C,H,W) and blend the ×``scale`` outputs.

    ``tile``: the largest tile side in input pixels; ``overlap``: the minimum overlap between
    neighbouring tiles, in input pixels.  ``margin`` (default ``overlap / 4``): input pixels at
    each inner tile edge that get zero weight (see the module docstring); it must satisfy
    0 ≤ margin < overlap / 2.  If the whole frame fits in one tile, ``fn`` is called once on
    ``x``.  ``fn`` must map (N,C,h,w) to (N,C',h·scale,w·scale).  Blending is done in float32
    (or float64 if ``fn`` returns float64) and the result is cast to ``fn``'s output dtype.
    """
    if x.dim() != 4:
        raise ValueError(f"tiled_forward expects (N,C,H,W), got shape {tuple(x.shape)}")
    tile, overlap, scale = int(tile), int(overlap), int(scale)
    if scale < 1:
        raise ValueError(f"scale must be ≥ 1, got {scale}")
    if overlap < 0:
        raise ValueError(f"overlap must be ≥ 0, got {overlap}")
    if tile <= overlap:
        raise ValueError(f"tile ({tile}) must be larger than overlap ({overlap})")
    if margin is None:
        margin = overlap / 4
    if overlap and not (0 <= margin < overlap / 2):
        raise ValueError(f"margin must be in [0, overlap/2), got {margin} for overlap {overlap}")
    n, _, h, w = x.shape
    if h <= tile and w <= tile:
        return fn(x)

    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    th, tw = min(tile, h), min(tile, w)
    out: Tensor | None = None
    wsum: Tensor | None = None
    out_dtype = x.dtype
    wx_cache: dict[int, Tensor] = {}
    for y0 in ys:
        wy: Tensor | None = None
        for x0 in xs:
            y = fn(x[:, :, y0 : y0 + th, x0 : x0 + tw])
            if y.dim() != 4 or y.shape[0] != n or y.shape[-2:] != (th * scale, tw * scale):
                raise ValueError(
                    f"fn returned shape {tuple(y.shape)} for a ({n},·,{th},{tw}) tile; "
                    f"expected (N, C, {th * scale}, {tw * scale}) at scale {scale}"
                )
            if out is None:
                out_dtype = y.dtype
                acc = torch.float64 if y.dtype == torch.float64 else torch.float32
                out = torch.zeros((n, y.shape[1], h * scale, w * scale), dtype=acc, device=y.device)
                wsum = torch.zeros((1, 1, h * scale, w * scale), dtype=acc, device=y.device)
            if wy is None:
                wy = _window_1d(y0, th, h, scale, overlap, margin, y.device).to(out.dtype)
            if x0 not in wx_cache:
                wx_cache[x0] = _window_1d(x0, tw, w, scale, overlap, margin, y.device).to(out.dtype)
            weight = wy[:, None] * wx_cache[x0][None, :]
            sy = slice(y0 * scale, (y0 + th) * scale)
            sx = slice(x0 * scale, (x0 + tw) * scale)
            out[:, :, sy, sx] += y.to(out.dtype) * weight
            wsum[:, :, sy, sx] += weight
    assert out is not None and wsum is not None
    return (out / wsum).to(out_dtype)


def tiled_model_forward(
    model: Any,
    x: Tensor,
    tile: int,
    overlap: int,
    *,
    context: str = "global",
    context_max_side: int | None = None,
    scale: int | None = None,
    margin: float | None = None,
) -> Tensor:
    """Tiled inference of an ``hdrvideo.models`` model with its global statistics fixed.

    ``context``: ``"global"`` (default) computes the model's image-level statistics once with
    ``model.global_context(x, max_side=context_max_side)`` and runs all tiles with them;
    ``"tile"`` lets every tile compute its own (the naive approach; tiles then disagree).
    ``margin`` defaults to the model's ``receptive_radius`` (capped below overlap/2), which makes
    the blend exact when the overlap is at least twice that radius.
    """
    if context not in ("global", "tile"):
        raise ValueError(f"context must be 'global' or 'tile', not {context!r}")
    scale = int(scale if scale is not None else getattr(model, "scale", 1))
    if margin is None and overlap > 0:
        radius = float(getattr(model, "receptive_radius", overlap / 4))
        margin = max(0.0, min(radius, overlap / 2 - 1.0))
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return model(x)
    ctx = None
    if context == "global" and hasattr(model, "global_context"):
        ctx = model.global_context(x, max_side=context_max_side)
    if ctx is None:
        fn = model
    else:
        def fn(t: Tensor) -> Tensor:
            return model(t, context=ctx)

    return tiled_forward(fn, x, scale, tile, overlap, margin=margin)


__all__ = ["tile_starts", "tiled_forward", "tiled_model_forward"]
