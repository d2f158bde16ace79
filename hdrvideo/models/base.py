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

Context = Optional[tuple[Tensor, ...]]


def _rgb_to_ycrcb601(x: Tensor, m: Tensor) -> Tensor:
    """R'G'B' → OpenCV float YCrCb (Y, Cr+0.5, Cb+0.5) with a precomputed BT.601 matrix.

    ``m`` is the rows of ``hdrvideo.colour.ycbcr_matrix("bt601")`` reordered to (Y, Cr, Cb).
    """
    y = torch.einsum("ij,njhw->nihw", m.to(x.dtype), x)
    offset = torch.tensor([0.0, 0.5, 0.5], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return y + offset


def _ycrcb601_to_rgb(y: Tensor, m_inv: Tensor) -> Tensor:
    offset = torch.tensor([0.0, 0.5, 0.5], dtype=y.dtype, device=y.device).view(1, 3, 1, 1)
    return torch.einsum("ij,njhw->nihw", m_inv.to(y.dtype), y - offset)


class ITMModel(nn.Module):
    """Base class of every architecture; see the module docstring for the contract.

    Subclasses implement :meth:`forward_net` (and :meth:`compute_context` if they use global
    statistics) in the network's own colour domain; they never deal with domains or clamping.
    """

    #: registry name; set by :func:`hdrvideo.models.create` (class default for direct use)
    arch: str = ""
    #: receptive-field radius in *input* pixels (a tile overlap of twice this is seam-exact)
    receptive_radius: int = 0

    def __init__(self, scale: int = 1, *, colour_domain: str = "rgb", clamp_output: bool = True) -> None:
        super().__init__()
        self.scale = int(scale)
        self.clamp_output = bool(clamp_output)
        self.colour_domain = colour_domain
        # OpenCV YCrCb (BT.601) matrices, built from hdrvideo.colour so there is one source of
        # coefficients.  Non-persistent buffers: they follow .to()/.half() but never appear in
        # the state_dict (whose keys must stay the official ones).
        from ..colour import ycbcr_matrix

        m = ycbcr_matrix("bt601", dtype=torch.float64)[[0, 2, 1]]  # rows Y, Cb, Cr -> Y, Cr, Cb
        self.register_buffer("_ycrcb_fwd", m.float(), persistent=False)
        self.register_buffer("_ycrcb_inv", torch.linalg.inv(m).float(), persistent=False)

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
            return _rgb_to_ycrcb601(rgb, self._ycrcb_fwd)
        return rgb

    def decode_output(self, y: Tensor) -> Tensor:
        """The network's output domain → R'G'B'."""
        if self._colour_domain == "ycrcb601":
            return _ycrcb601_to_rgb(y, self._ycrcb_inv)
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

    def global_context(self, x: Tensor, max_side: int | None = None) -> Context:
        """Compute the image-level quantities once for a whole frame (R'G'B', like ``forward``).

        ``max_side``: if given and the frame is larger, the statistics are computed on an
        antialiased bilinear downscale whose longer side is ``max_side`` — bounded memory, at the
        price of an approximation (second-order statistics of features shrink a little when
        fine detail is removed).  ``None`` means the exact full-frame statistics.
        """
        h, w = x.shape[-2:]
        if max_side is not None and max(h, w) > max_side:
            f = max_side / max(h, w)
            size = (max(1, round(h * f)), max(1, round(w * f)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return self.compute_context(self.encode_input(x))

    # -- info ------------------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, scale={self.scale}, colour_domain={self._colour_domain!r}"


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


def check_context(context: Sequence[Tensor] | None, n: int, name: str) -> None:
    if context is not None and len(context) != n:
        raise ValueError(f"{name}: context must hold {n} tensors, got {len(context)}")
