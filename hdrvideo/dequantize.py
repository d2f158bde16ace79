"""Dequantisation of 8-bit video: smooth gradients back from their code-value staircase.

An 8-bit source holds a smooth gradient as flat runs one code apart. Expanded into PQ (BT.2408
or a steeper inverse tone curve), each 8-bit step becomes several 10-bit codes: visible bands.
:func:`deband` estimates the smooth signal and moves each pixel towards it, but never by more
than one input code and only where the neighbourhood is flat, so texture, grain and edges pass
untouched. It is deterministic (no dither, no noise): a still frame gives the same output every
time, and the output stays in float for the rest of the chain (the 10-bit pack rounds once).

Method (in the spirit of gradient-aware debanders such as FFmpeg's ``gradfun`` and libplacebo's
``deband``, which average a neighbourhood where it differs from the pixel by less than a
threshold, but multi-scale and without their random sampling or added grain):

1. A mean pyramid of luma: 4×4 block means ``G1`` and 2× coarser means ``G2 … GK`` (down to 64×64 px).
2. Coarse to fine, each level is the upsampled (bilinear) smoother level plus its own detail
   ``D = Gk − up(Sk+1)``, where details smaller than about one code (the size of a quantisation
   step, all an 8-bit staircase leaves at these scales) are cored away and larger ones (edges,
   shading) kept: ``Sk = up(Sk+1) + D·keep(|D|)``.
3. A 4×4 block is *flat* when its mean lies on the smooth surface (|G1 − S1| ≤ 1–2 codes) and
   the surface ``S`` (``S1`` upsampled bilinearly to full size) is *consistent* with its pixels:
   it lies inside their quantisation cells (Y' ± ½ code) nearly everywhere, so it is a possible
   original of them (texture, grain and edges are far outside). The flat mask is eroded by one
   block, so nothing next to an edge or texture is touched.
4. ``Y'out = Y' + flat·clamp(S − Y', ±½ code)``: every pixel stays inside its own quantisation
   cell (the output still quantises to the input), moved only in flat blocks.

All of it runs on luma Y' (the source's decoded luma plane, whose quantisation cell is exactly
±½ code), and the correction is added to R', G', B' alike, i.e. to Y' only: about a third of the
work of doing it per channel. Chroma steps (one 8-bit Cb/Cr code) are left as they are.
Codes are in R'G'B' units of the source: ``step`` = 1/219 for limited-range 8-bit (one luma
code), 1/255 for full range.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["deband", "code_step", "dither_pattern", "expand_blocks", "add_weighted"]


def code_step(bit_depth: int, full_range: bool) -> float:
    """Size of one code value of the source in normalised R'G'B' (BT.709/BT.2100 quantisation)."""
    if full_range:
        return 1.0 / (2**bit_depth - 1)
    return 1.0 / (219.0 * 2 ** (bit_depth - 8))


def _extend(x: Tensor, dim: int, before: bool = True, after: bool = True) -> Tensor:
    """Add one sample at either end of ``dim`` by linear extrapolation (2·x₀ − x₁), so that
    averaging and bilinear interpolation near the borders stay exact on linear ramps."""
    n = x.shape[dim]
    if n < 2:
        return torch.cat([x] * (1 + before + after), dim=dim)
    parts = [x]
    if before:
        parts.insert(0, 2 * x.narrow(dim, 0, 1) - x.narrow(dim, 1, 1))
    if after:
        parts.append(2 * x.narrow(dim, n - 1, 1) - x.narrow(dim, n - 2, 1))
    return torch.cat(parts, dim=dim)


def _down2(x: Tensor) -> Tensor:
    """2×2 means; an odd size is first extended by one extrapolated row/column."""
    if x.shape[-2] % 2:
        x = _extend(x, -2, before=False)
    if x.shape[-1] % 2:
        x = _extend(x, -1, before=False)
    return F.avg_pool2d(x, 2)


def _up(x: Tensor, factor: int, size: tuple[int, int]) -> Tensor:
    """Bilinear ×factor (pixel centres aligned as block means), cropped to ``size``; the borders
    are extrapolated linearly rather than held flat."""
    x = _extend(_extend(x, -2), -1)
    up = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False, recompute_scale_factor=False)
    return up[..., factor : factor + size[0], factor : factor + size[1]]


def expand_blocks(x: Tensor, block: int, size: tuple[int, int]) -> Tensor:
    """Each value of a block map (N,C,h,w) repeated over its ``block``×``block`` pixels, cropped
    to ``size`` (nearest-neighbour upsampling by one broadcast copy)."""
    out = x.repeat_interleave(block, dim=-1).repeat_interleave(block, dim=-2)
    return out[..., : size[0], : size[1]]


def add_weighted(x: Tensor, t: Tensor, weight: Tensor, block: int, inplace: bool = False) -> Tensor:
    """``x + t·W`` where W repeats each value of the block map ``weight`` (N,1,h,w) over its
    ``block``×``block`` pixels; ``t`` broadcasts against ``x`` (N,C,H,W). ``inplace`` writes into
    ``x``."""
    w = expand_blocks(weight, block, x.shape[-2:])
    if inplace and (torch.is_inference_mode_enabled() or not x.is_inference()):
        return x.addcmul_(t, w)
    return torch.addcmul(x, t, w)


def _slope(s: Tensor) -> Tensor:
    """Largest of the horizontal and vertical central differences of a block map, per block."""
    gx = (_extend(s, -1)[..., 2:] - _extend(s, -1)[..., :-2]).abs_().mul_(0.5)
    gy = (_extend(s, -2)[..., 2:, :] - _extend(s, -2)[..., :-2, :]).abs_().mul_(0.5)
    return torch.maximum(gx, gy)


def _erode(x: Tensor) -> Tensor:
    """3×3 minimum (edges replicate) of a small map, by shifted slices."""
    rows = torch.minimum(x, torch.cat([x[..., :1, :], x[..., :-1, :]], dim=-2))
    rows = torch.minimum(rows, torch.cat([x[..., 1:, :], x[..., -1:, :]], dim=-2))
    out = torch.minimum(rows, torch.cat([rows[..., :1], rows[..., :-1]], dim=-1))
    return torch.minimum(out, torch.cat([rows[..., 1:], rows[..., -1:]], dim=-1))


def _ramp(x: Tensor, lo: float, hi: float) -> Tensor:
    """0 at ≤ lo, 1 at ≥ hi, linear between."""
    return ((x - lo) / (hi - lo)).clamp_(0.0, 1.0)


def deband(
    rgb: Tensor,
    step: float,
    *,
    luma_weights: tuple[float, float, float] = (0.2126, 0.7152, 0.0722),
    block: int = 4,
    levels: int = 5,
    core: tuple[float, float] = (0.6, 1.2),
    fit: tuple[float, float] = (1.0, 2.0),
    consistent: tuple[float, float] = (0.02, 0.06),
    max_shift: float = 0.5,
    return_flat: bool = False,
    inplace: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Dequantise ``rgb`` (N,3,H,W), float R'G'B' decoded from integer Y'CbCr codes of size ``step``.

    The work is done on luma Y' (``luma_weights``: the source's K_R, K_G, K_B), which is the
    decoded luma plane itself, so its quantisation cell is exactly ±½ code; the correction is
    added to R', G' and B' alike, which changes Y' by it and leaves Cb, Cr untouched (chroma is
    not debanded). Thresholds are in codes: ``core`` (detail kept fully above the upper, dropped
    below the lower), ``fit`` (distance of a block mean from the smooth surface), ``consistent``
    (mean distance by which the smooth surface leaves the pixels' ±½-code cells in a block) and
    ``max_shift`` (the largest change of any pixel, ≥ ½; ½ code keeps every pixel in its cell). Returns a new tensor (``inplace``: ``rgb``, modified), or
    ``rgb`` itself when nothing is flat, and with ``return_flat`` the flat-block map (N,1,⌈H/4⌉,⌈W/4⌉) in [0, 1], zero in
    blocks within two codes of black.
    """
    n, c, h, w = rgb.shape
    wr, wg, wb = luma_weights
    y = (rgb[:, 0:1] * wr).add_(rgb[:, 1:2], alpha=wg).add_(rgb[:, 2:3], alpha=wb)
    g1 = F.avg_pool2d(y, block, ceil_mode=True)
    # pyramid of means, then coarse-to-fine reconstruction with the sub-code details cored away
    pyr = [g1]
    while len(pyr) < levels and min(pyr[-1].shape[-2:]) > 2:
        pyr.append(_down2(pyr[-1]))
    s = pyr[-1]
    lo, hi = core[0] * step, core[1] * step
    for g in reversed(pyr[:-1]):
        u = _up(s, 2, g.shape[-2:])
        d = g - u
        s = u.addcmul_(d, _ramp(d.abs(), lo, hi))
    # candidate blocks: the block mean lies on the smooth surface
    flat = 1.0 - _ramp((g1 - s).abs(), fit[0] * step, fit[1] * step)
    if not bool((flat > 0).any()):
        return (rgb, flat) if return_flat else rgb
    # full size: the smooth surface S must be a possible original of the block's pixels, i.e.
    # lie inside their quantisation cells (Y' ± ½ code) nearly everywhere; texture, grain and
    # edges are far outside. Then each pixel's luma moves towards S by at most max_shift codes.
    shift = _up(s, block, (h, w)).sub_(y)
    half = 0.5 * step
    inside = shift.clamp(-half, half)
    # measured on every other row and column (4 of a block's 16 pixels): a quarter of the work
    sub = block // 2
    outside = F.avg_pool2d((shift[..., ::2, ::2] - inside[..., ::2, ::2]).abs_(), sub, ceil_mode=True)
    if outside.shape[-2:] != flat.shape[-2:]:
        outside = outside[..., : flat.shape[-2], : flat.shape[-1]]
    flat.mul_(1.0 - _ramp(outside, consistent[0] * step, consistent[1] * step))
    flat = _erode(flat)  # nothing next to an edge or texture is touched
    if max_shift != 0.5:
        inside.add_((shift - inside).clamp_(-(max_shift - 0.5) * step, (max_shift - 0.5) * step))
    shift = inside
    out = add_weighted(rgb, shift, flat, block, inplace=inplace)
    if return_flat:
        return out, flat * _ramp(g1, 1.0 * step, 2.0 * step) * _ramp(_slope(s), 0.002 * step, 0.01 * step)
    return out


def dither_pattern(height: int, width: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """A static, deterministic dither pattern (H,W) in (−1, 1) with a triangular distribution.

    The sum of two interleaved-gradient-noise fields (J. Jimenez, "Next Generation Post
    Processing in Call of Duty: Advanced Warfare", SIGGRAPH 2014: frac(52.9829189 ·
    frac(0.06711056·x + 0.00583715·y))) at offset positions, minus 1. Its energy is at high
    spatial frequencies, and it is the same in every frame, so it cannot flicker.
    """
    y = torch.arange(height, device=device, dtype=torch.float64).view(-1, 1)
    x = torch.arange(width, device=device, dtype=torch.float64).view(1, -1)

    def ign(px: Tensor, py: Tensor) -> Tensor:
        return torch.frac(52.9829189 * torch.frac(0.06711056 * px + 0.00583715 * py))

    return (ign(x, y) + ign(x + 5.0, y + 3.0) - 1.0).to(dtype)
