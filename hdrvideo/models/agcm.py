"""AGCM: the adaptive global colour mapping network of HDRTVNet (35,251 parameters).

Paper: Chen, Zhang, Liu, Qiao, Dong, "A New Journey from SDRTV to HDRTV", ICCV 2021
(and HDRTVNet++, Li et al. 2023).  The structure (and so the key names of the published
``AGCM.pth``, which loads with ``strict=True``):

* condition network ``classifier.model``: five colour blocks 3→16→32→64→128→128, each
  conv1×1 → AvgPool2d(3, 2, 1, count_include_pad) → LeakyReLU(0.2) (→ InstanceNorm2d(affine)
  on the first four); then Dropout(0.5) (identity at inference), conv1×1 128→6 and a global
  average pool: a 6-d vector f.
* base network: 1×1 convs ``conv_first`` 3→64, ``HRconv`` 64→64, ``conv_last`` 64→3, each
  followed by the global feature modulation out = out·scale(f) + shift(f) + out (Linear
  ``cond_scale_*`` / ``cond_shift_*`` 6→C), with ReLU after the first two.

The condition image is the input downscaled ×1/4 with bicubic; it is computed inside
``forward`` (``condition_resize`` option):

* ``"matlab"`` (default): an exact re-implementation of MATLAB ``imresize(x, 1/4, 'bicubic')``
  (what upstream used to make its condition images): a fixed separable 16-tap Keys (a = -0.5)
  kernel scaled ×4, normalised, applied as a stride-4 depthwise convolution after half-sample
  symmetric padding (MATLAB's default).  Output size ceil(H/4)×ceil(W/4).  It is plain Conv /
  Slice / Concat, so it exports to ONNX with dynamic sizes.
* ``"antialias"``: ``F.interpolate(x, scale_factor=0.25, mode="bicubic", antialias=True)``.  Same
  filter in the interior (torch's antialiased bicubic is also Keys a = -0.5 stretched ×4), but
  it truncates-and-renormalises at the borders instead of mirroring, and its size is floor(H/4).
  Not exportable at ONNX opset 17 (Resize has no antialias before opset 18).
* ``"bicubic"``: plain ``F.interpolate(..., mode="bicubic", align_corners=False)`` without
  antialiasing (a 4-tap a = -0.75 kernel that aliases on a ×1/4 downscale).  Exportable; kept
  for comparison only.

Because the condition vector is pooled over the whole image, all three give close results on
natural images and identical results on flat frames.

Global context: the 6-d vector f (``compute_context``); the base network is purely per-pixel,
so with a fixed f tiles are exact even without overlap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Context, ITMModel, as_dtype, check_context, param_dtype

CONDITION_RESIZES = ("matlab", "antialias", "bicubic")


def _keys_cubic(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def matlab_bicubic_taps(factor: int = 4) -> list[float]:
    """MATLAB imresize taps for an integer downscale ``factor`` (antialiased Keys cubic, a=-0.5).

    Output sample j sits at input coordinate factor·j + (factor-1)/2; the taps cover the 4·factor
    input pixels at distances ±0.5 … ±(2·factor-0.5), weights cubic(d/factor)/factor normalised.
    """
    n = 4 * factor
    d = [(k - (n - 1) / 2) for k in range(n)]
    w = [_keys_cubic(di / factor) / factor for di in d]
    s = sum(w)
    return [wi / s for wi in w]


def _symmetric_pad(x: Tensor, before: int, after: int, dim: int) -> Tensor:
    """Half-sample symmetric padding (MATLAB's 'symmetric': edge pixel repeated) along ``dim``.

    Built only from constant-size edge slices, flips and concats: no shape arithmetic (ONNX
    sizes stay dynamic) and only a few rows/columns are copied.  Alternating mirrored and
    unmirrored copies of the edge slice make it exact (periodic mirroring, like MATLAB) even
    for images narrower than the pad.
    """
    dim = dim % x.dim()

    def sl(start, stop):
        return (slice(None),) * dim + (slice(start, stop),)

    head = x[sl(0, before)]  # == x when the image is narrower than ``before``
    tail = x[sl(-after, None)]
    head_f, tail_f = head.flip(dim), tail.flip(dim)
    # left of x: ... x, x', [x]  -> rightmost copy is the mirrored one
    left = torch.cat([head_f if (before - 1 - i) % 2 == 0 else head for i in range(before)], dim=dim)
    # right of x: [x], x', x, x' ...
    right = torch.cat([tail_f if i % 2 == 0 else tail for i in range(after)], dim=dim)
    return torch.cat([left[sl(-before, None)], x, right[sl(0, after)]], dim=dim)


class _InstanceNorm2d(nn.InstanceNorm2d):
    """InstanceNorm2d (affine, no running stats) written as plain reductions.

    Same parameters/state_dict as ``nn.InstanceNorm2d(c, affine=True)`` and the same result
    (biased variance, eps 1e-5), but it also accepts a 1×1 map (torch's refuses one; the
    normalised value is then 0 and the output is the bias) so tiny frames and tiles work.
    """

    def forward(self, x: Tensor) -> Tensor:
        m = x.mean(dim=(2, 3), keepdim=True)
        var = ((x - m) * (x - m)).mean(dim=(2, 3), keepdim=True)
        y = (x - m) / torch.sqrt(var + self.eps)
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]


class _GlobalAvgPool(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


def _colour_block(cin: int, cout: int, norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 1),
        nn.AvgPool2d(3, stride=2, padding=1),
        nn.LeakyReLU(0.2),
    ]
    if norm:
        layers.append(_InstanceNorm2d(cout, affine=True))
    return layers


class ConditionNet(nn.Module):
    """The colour condition network (``classifier``): image → (N, 6, 1, 1)."""

    def __init__(self, out_c: int = 6) -> None:
        super().__init__()
        self.model = nn.Sequential(
            *_colour_block(3, 16, True),
            *_colour_block(16, 32, True),
            *_colour_block(32, 64, True),
            *_colour_block(64, 128, True),
            *_colour_block(128, 128, False),
            nn.Dropout(0.5),
            nn.Conv2d(128, out_c, 1),
            _GlobalAvgPool(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class AGCM(ITMModel):
    """Adaptive global colour mapping (×1)."""

    receptive_radius = 0

    def __init__(self, nf: int = 64, cond_c: int = 6, condition_resize: str = "matlab", **kwargs) -> None:
        kwargs.pop("scale", None)
        super().__init__(1, **kwargs)
        if condition_resize not in CONDITION_RESIZES:
            raise ValueError(f"condition_resize must be one of {CONDITION_RESIZES}, not {condition_resize!r}")
        self.condition_resize = condition_resize
        self.nf = nf
        self.classifier = ConditionNet(cond_c)
        self.cond_scale_first = nn.Linear(cond_c, nf)
        self.cond_scale_HR = nn.Linear(cond_c, nf)
        self.cond_scale_last = nn.Linear(cond_c, 3)
        self.cond_shift_first = nn.Linear(cond_c, nf)
        self.cond_shift_HR = nn.Linear(cond_c, nf)
        self.cond_shift_last = nn.Linear(cond_c, 3)
        self.conv_first = nn.Conv2d(3, nf, 1)
        self.HRconv = nn.Conv2d(nf, nf, 1)
        self.conv_last = nn.Conv2d(nf, 3, 1)
        self.act = nn.ReLU(inplace=True)
        taps = torch.tensor(matlab_bicubic_taps(4), dtype=torch.float32)
        # depthwise kernels for the 3 channels, fixed shapes (ONNX Conv needs a known kernel)
        self.register_buffer("_taps_w", taps.view(1, 1, 1, 16).repeat(3, 1, 1, 1), persistent=False)
        self.register_buffer("_taps_h", taps.view(1, 1, 16, 1).repeat(3, 1, 1, 1), persistent=False)

    # -- condition image -------------------------------------------------------------------
    def _matlab_downscale4(self, x: Tensor) -> Tensor:
        xw = F.conv2d(_symmetric_pad(x, 6, 9, -1), self._taps_w.to(x.dtype), stride=(1, 4), groups=3)
        return F.conv2d(_symmetric_pad(xw, 6, 9, -2), self._taps_h.to(x.dtype), stride=(4, 1), groups=3)

    def condition_image(self, x: Tensor) -> Tensor:
        """The condition input: ``x`` downscaled ×1/4 (see ``condition_resize``)."""
        if self.condition_resize == "matlab":
            return self._matlab_downscale4(x)
        aa = self.condition_resize == "antialias"
        return F.interpolate(x, scale_factor=0.25, mode="bicubic", align_corners=False, antialias=aa)

    def condition_vector(self, x: Tensor) -> Tensor:
        """The 6-d condition, in the condition network's precision (FP32 under mixed precision)."""
        return self.classifier(self.condition_image(as_dtype(x, param_dtype(self.classifier)))).flatten(1)

    # -- network ---------------------------------------------------------------------------
    def compute_context(self, x: Tensor) -> Context:
        return (self.condition_vector(x),)

    def statistics_modules(self) -> list[nn.Module]:
        return [self.classifier, self.cond_scale_first, self.cond_scale_HR, self.cond_scale_last,
                self.cond_shift_first, self.cond_shift_HR, self.cond_shift_last]

    @staticmethod
    def _modulate(out: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        scale, shift = as_dtype(scale, out.dtype), as_dtype(shift, out.dtype)
        return out * scale[:, :, None, None] + shift[:, :, None, None] + out

    def forward_net(self, x: Tensor, context: Context = None) -> Tensor:
        check_context(context, 1, "AGCM")
        f = self.condition_vector(x) if context is None else context[0]
        f = as_dtype(f, param_dtype(self.cond_scale_first))
        out = self._modulate(self.conv_first(x), self.cond_scale_first(f), self.cond_shift_first(f))
        out = self.act(out)
        out = self._modulate(self.HRconv(out), self.cond_scale_HR(f), self.cond_shift_HR(f))
        out = self.act(out)
        return self._modulate(self.conv_last(out), self.cond_scale_last(f), self.cond_shift_last(f))


__all__ = ["AGCM", "ConditionNet", "matlab_bicubic_taps", "CONDITION_RESIZES"]
