"""The common base class of every registered network, and the model I/O contract.

I/O contract
------------
A model returned by :func:`hdrvideo.models.create` maps a batch ``(N, 3, H, W)`` of
display-referred BT.709 R'G'B' in [0, 1] to ``(N, 3, sH, sW)`` PQ BT.2020 R'G'B'
(nominally [0, 1]), where ``s`` is ``model.scale``.

Why the wrapper *is* the network
--------------------------------
:class:`ITMModel` is an ``nn.Module`` base class that every architecture subclasses; the
architecture's layers are registered directly on it.  So ``model.state_dict()`` has exactly
the official key names (``fea_conv.weight``, ``IRB1.esa.conv_du.0.weight``, ...,
``classifier.model.0.weight``) and ``model.load_state_dict(official_sd, strict=True)`` works
on the very object users load weights into — no ``.net.`` prefix to add or strip.  The wrapper
part is three plain attributes plus the ``forward`` shell:

* ``colour_domain`` — what the *network* sees: ``"rgb"`` (our own weights: R'G'B' in and out)
  or ``"ycrcb601"`` (the upstream IRNet code: OpenCV float YCrCb, BT.601 coefficients, full
  range, channel order Y, Cr, Cb with chroma offset +0.5, in and out).  The conversion happens
  inside ``forward`` so the model's *external* contract is always R'G'B' → R'G'B'.
* ``clamp_output`` — clamp the result to [0, 1] in eval mode only (training sees the raw output,
  so the loss keeps its gradient outside the range).
* ``scale`` / ``arch`` — the integer upscale factor and the registry name.

Global context (for tiled inference)
------------------------------------
Some networks use whole-image statistics (IRNet's contrast-aware channel attention, GPGMNet's
global priors, AGCM's condition vector).  Running such a network tile by tile would compute those
statistics per tile, and the tiles would disagree with each other and with the full frame.  Every
model therefore splits its image-level quantities out: ``ctx = model.global_context(x)`` computes
them once on the whole frame (or on a downscaled copy when ``max_side`` is given, to bound memory),
and ``model(tile, context=ctx)`` runs with them fixed.  With a full-frame context, tiled output
equals untiled output up to the convolution halo, which the tile overlap absorbs.  A model without
global statistics returns ``None``.  See :func:`hdrvideo.processors.tiling.tiled_model_forward`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

COLOUR_DOMAINS: tuple[str, ...] = ("rgb", "ycrcb601")
#: How convolutions extend the frame at its border: ``"zeros"`` (the papers' and the official
#: checkpoints' layout) or ``"replicate"`` (the border pixel repeated, so a flat frame — black,
#: a letterbox bar — gives a flat output right up to the edge; our own weights).
PADDING_MODES: tuple[str, ...] = ("zeros", "replicate")

Context = Optional[tuple[Tensor, ...]]


def _rgb_to_ycrcb601(x: Tensor, m: Tensor, offset: Tensor) -> Tensor:
    """R'G'B' → OpenCV float YCrCb (Y, Cr+0.5, Cb+0.5) with a precomputed BT.601 matrix.

    ``m`` is the rows of ``hdrvideo.colour.ycbcr_matrix("bt601")`` reordered to (Y, Cr, Cb);
    ``offset`` is (0, 0.5, 0.5) as a (1,3,1,1) tensor on the model's device (a buffer, so no
    host→device copy happens in the forward pass and it can be captured in a CUDA graph).
    """
    y = torch.einsum("ij,njhw->nihw", m.to(x.dtype), x)
    return y + offset.to(x.dtype)


def _ycrcb601_to_rgb(y: Tensor, m_inv: Tensor, offset: Tensor) -> Tensor:
    return torch.einsum("ij,njhw->nihw", m_inv.to(y.dtype), y - offset.to(y.dtype))


def as_dtype(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``x`` in ``dtype``; no op at all (nothing traced into an ONNX graph) when it already is."""
    return x if x.dtype == dtype else x.to(dtype)


def param_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of ``module``'s first parameter (float32 for a module without any)."""
    p = next(module.parameters(), None)
    return p.dtype if p is not None else torch.float32


class ITMModel(nn.Module):
    """Base class of every architecture; see the module docstring for the contract.

    Subclasses implement :meth:`forward_net` (and :meth:`compute_context` if they use global
    statistics) in the network's own colour domain; they never deal with domains or clamping.
    """

    #: registry name; set by :func:`hdrvideo.models.create` (class default for direct use)
    arch: str = ""
    #: receptive-field radius in *input* pixels (a tile overlap of twice this is seam-exact)
    receptive_radius: int = 0

    def __init__(self, scale: int = 1, *, colour_domain: str = "rgb", clamp_output: bool = True,
                 padding_mode: str = "zeros") -> None:
        super().__init__()
        self.scale = int(scale)
        self.clamp_output = bool(clamp_output)
        self.colour_domain = colour_domain
        self._padding_mode = padding_mode
        # OpenCV YCrCb (BT.601) matrices, built from hdrvideo.colour so there is one source of
        # coefficients.  Non-persistent buffers: they follow .to()/.half() but never appear in
        # the state_dict (whose keys must stay the official ones).
        from ..colour import ycbcr_matrix

        m = ycbcr_matrix("bt601", dtype=torch.float64)[[0, 2, 1]]  # rows Y, Cb, Cr -> Y, Cr, Cb
        self.register_buffer("_ycrcb_fwd", m.float(), persistent=False)
        self.register_buffer("_ycrcb_inv", torch.linalg.inv(m).float(), persistent=False)
        self.register_buffer("_ycrcb_offset", torch.tensor([0.0, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)

    # -- border padding --------------------------------------------------------------------
    @property
    def padding_mode(self) -> str:
        return self._padding_mode

    @padding_mode.setter
    def padding_mode(self, value: str) -> None:
        """Set how every padded convolution extends the frame (see :data:`PADDING_MODES`)."""
        if value not in PADDING_MODES:
            raise ValueError(f"unknown padding_mode {value!r}; expected one of {', '.join(PADDING_MODES)}")
        self._padding_mode = value
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and any(p > 0 for p in m.padding):
                m.padding_mode = value

    # -- colour domain ---------------------------------------------------------------------
    @property
    def colour_domain(self) -> str:
        return self._colour_domain

    @colour_domain.setter
    def colour_domain(self, value: str) -> None:
        if value not in COLOUR_DOMAINS:
            raise ValueError(f"unknown colour_domain {value!r}; expected one of {', '.join(COLOUR_DOMAINS)}")
        self._colour_domain = value

    def encode_input(self, rgb: Tensor) -> Tensor:
        """R'G'B' → the network's input domain."""
        if self._colour_domain == "ycrcb601":
            return _rgb_to_ycrcb601(rgb, self._ycrcb_fwd, self._ycrcb_offset)
        return rgb

    def decode_output(self, y: Tensor) -> Tensor:
        """The network's output domain → R'G'B'."""
        if self._colour_domain == "ycrcb601":
            return _ycrcb601_to_rgb(y, self._ycrcb_inv, self._ycrcb_offset)
        return y

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: Tensor, context: Context = None) -> Tensor:
        """(N,3,H,W) BT.709 R'G'B' → (N,3,sH,sW) PQ BT.2020 R'G'B' (clamped in eval mode)."""
        y = self.decode_output(self.forward_net(self.encode_input(x), context))
        if self.clamp_output and not self.training:
            y = y.clamp(0.0, 1.0)
        return y

    def forward_net(self, x: Tensor, context: Context = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    # -- global context --------------------------------------------------------------------
    def compute_context(self, x: Tensor) -> Context:
        """Image-level quantities of ``x`` (already in the network domain); ``None`` if none."""
        return None

    def global_context(self, x: Tensor, max_side: int | None = None, tile: int = 0) -> Context:
        """Compute the image-level quantities once for a whole frame (R'G'B', like ``forward``).

        ``max_side``: if given and the frame is larger, the statistics are computed on an
        antialiased bilinear downscale whose longer side is ``max_side`` — bounded memory, at the
        price of an approximation (second-order statistics of features shrink a little when
        fine detail is removed).  ``None`` means the exact full-frame statistics.  ``tile``
        (> 0): networks that support it compute the exact statistics with their local layers
        evaluated in tiles of that many pixels (bounded working memory, same result).
        """
        h, w = x.shape[-2:]
        if max_side is not None and max(h, w) > max_side:
            f = max_side / max(h, w)
            size = (max(1, round(h * f)), max(1, round(w * f)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        if tile > 0:
            return self.compute_context_tiled(self.encode_input(x), tile)
        return self.compute_context(self.encode_input(x))

    def compute_context_tiled(self, x: Tensor, tile: int) -> Context:
        """:meth:`compute_context` with bounded working memory; by default the plain one."""
        return self.compute_context(x)

    # -- precision -------------------------------------------------------------------------
    def statistics_modules(self) -> list[nn.Module]:
        """The submodules that compute image statistics or what is computed from them (IRNet's
        attention MLPs, GPGMNet's prior extractor and modulation Linears, AGCM's condition
        network and modulation Linears). :meth:`half_with_fp32_statistics` keeps them in FP32."""
        return []

    def half_with_fp32_statistics(self, dtype: torch.dtype = torch.float16) -> "ITMModel":
        """Convert to ``dtype`` in place except the statistics, which stay FP32.

        The same policy as the FP16 ONNX graphs (:mod:`hdrvideo.backends.fp16`): the
        full-resolution convolutions run in ``dtype``; channel means and variances, pooled priors
        and everything computed from them run in FP32, because a half-precision variance
        overflows once features deviate from their mean by more than 256 (65,504 = 256²) and a
        960×540 channel sum is far beyond FP16. The statistics modules cast their inputs up,
        and their results are cast down where they meet the features. Buffers of the model
        itself (colour matrices, resampling taps) stay FP32 and are cast where they are used.
        """
        keep = {id(m) for s in self.statistics_modules() for m in s.modules()}
        for m in self.modules():
            if id(m) in keep or m is self:
                continue
            for p in m.parameters(recurse=False):
                p.data = p.data.to(dtype)
            for name, b in m.named_buffers(recurse=False):
                if b is not None and b.is_floating_point():
                    setattr(m, name, b.to(dtype))
        return self

    # -- info ------------------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return (f"arch={self.arch!r}, scale={self.scale}, colour_domain={self._colour_domain!r}, "
                f"padding_mode={self._padding_mode!r}")


def conv(cin: int, cout: int, k: int, *, stride: int = 1, dilation: int = 1, bias: bool = True) -> nn.Conv2d:
    """Conv with 'same' padding (k odd)."""
    return nn.Conv2d(cin, cout, k, stride=stride, padding=dilation * (k - 1) // 2, dilation=dilation, bias=bias)


def mean_std(x: Tensor, eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """Per-channel mean and population std over H×W as plain reductions (ONNX ReduceMean).

    std = sqrt(mean((x - mean)²)); the variance is floored at ``eps`` (1e-12, i.e. std ≥ 1e-6)
    only so the gradient of sqrt stays finite on perfectly flat channels.
    """
    m = x.mean(dim=(2, 3), keepdim=True)
    var = ((x - m) * (x - m)).mean(dim=(2, 3), keepdim=True)
    return m, torch.sqrt(torch.clamp(var, min=eps))


def map_local_tiled(fn, x: Tensor, radius: int, tile: int, sink=None) -> Tensor | None:
    """``fn(x)`` for a purely local ``fn`` (same size out, receptive radius ``radius`` pixels),
    evaluated tile by tile with a halo so the result equals ``fn(x)`` exactly: each tile reads
    ``radius`` extra pixels (clipped at the frame border, where ``fn``'s own padding applies as
    on the whole frame) and only its inner part is kept. Bounds the working memory of ``fn``
    (convolution workspaces, intermediates) to one tile.

    Without ``sink`` the result is assembled and returned; with it, ``sink((rows, cols), part)``
    receives each tile's inner part instead (and None is returned).
    """
    h, w = x.shape[-2:]
    tile = tile if tile > 0 else max(h, w)
    out = None
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            ya, xa = max(0, y0 - radius), max(0, x0 - radius)
            yb, xb = min(h, y1 + radius), min(w, x1 + radius)
            part = fn(x[..., ya:yb, xa:xb])[..., y0 - ya: y0 - ya + (y1 - y0), x0 - xa: x0 - xa + (x1 - x0)]
            if sink is not None:
                sink((slice(y0, y1), slice(x0, x1)), part)
                continue
            if out is None:
                out = part.new_empty((*part.shape[:-2], h, w))
            out[..., y0:y1, x0:x1] = part
    return out


def check_context(context: Sequence[Tensor] | None, n: int, name: str) -> None:
    if context is not None and len(context) != n:
        raise ValueError(f"{name}: context must hold {n} tensors, got {len(context)}")
