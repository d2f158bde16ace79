"""Temporal stability of image-level statistics: smoothing over time, reset at scene cuts.

Networks with whole-frame statistics (IRNet's channel attention, GPGMNet's global priors,
AGCM's condition vector) recompute them on every frame, so grain, noise and small motions make
them — and the whole picture's brightness and colour — jitter from frame to frame. Here the
statistics of each frame are replaced by an exponential moving average over the frames of the
same shot, restarted at every scene cut (:class:`SceneCutDetector`), so nothing is smoothed
across a cut and the first frame of a shot is exact.

Fades are followed, not smoothed: a frame that differs from the previous one by a global gain
(a fade to or from black, an exposure ramp) takes its own statistics, in the proportion
:class:`SceneCutDetector` measures. Smoothing the statistics through a fade makes them lag the
picture, and the output then drifts for about τ after the fade ends while the picture holds still
(measured with ``scripts/fade_hold.py``: `sr4-itm` fell from 110 to 71 cd/m² over the second
after a fade-in, its steady level being 64).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["TemporalContext", "SceneCutDetector", "DEFAULT_TIME_CONSTANT_S"]

#: Default smoothing time constant in seconds (the statistics' step response reaches 63 % after
#: this long; fades are followed through their fade weight, cuts restart it). On a pan into the
#: light the statistics change with the framing and the picture's grade drifts with them, which
#: motion-compensated flicker counts: at 160×90, 16 frames, 1 s left the broadcast networks
#: 0.28–0.30 PU21 above bt2408 (bar 0.2), 3 s gives 0.11–0.12 (0.07 at 96×56) while the log–log
#: brightness slope stays ≤ 1.21 (bar 1.25; frozen statistics reach 1.27: the networks' own
#: tone curve is steeper than linear). Measured with ``hdrvideo filmtest`` at 1, 2, 3 and 4 s.
DEFAULT_TIME_CONSTANT_S = 3.0


class TemporalContext:
    """EMA of per-frame statistics: s_t = a_t·s_{t−1} + (1 − a_t)·c_t, s = c at cuts.

    a_t = exp(−1/τ)·(1 − f_t), where f_t ∈ [0, 1] is the frame's fade weight (``follow``; 0 when
    not given). ``time_constant`` τ is in frames. ``context`` tensors have the batch (frames, in
    stream order) as their first axis; the state carries over between calls.
    """

    def __init__(self, time_constant: float) -> None:
        self.time_constant = float(time_constant)
        self.a = math.exp(-1.0 / self.time_constant) if self.time_constant > 0 else 0.0
        self.state: tuple[Tensor, ...] | None = None

    def reset(self) -> None:
        self.state = None

    def __call__(self, context: tuple[Tensor, ...], cuts: list[bool],
                 follow: list[float] | None = None) -> tuple[Tensor, ...]:
        n = context[0].shape[0]
        out: list[list[Tensor]] = [[] for _ in context]
        for i in range(n):
            frame = tuple(c[i: i + 1].float() for c in context)
            a = self.a * (1.0 - min(1.0, max(0.0, follow[i]))) if follow and i < len(follow) else self.a
            if self.state is None or (i < len(cuts) and cuts[i]) or a == 0.0:
                self.state = frame
            else:
                self.state = tuple(a * s + (1.0 - a) * f for s, f in zip(self.state, frame))
            for k, s in enumerate(self.state):
                out[k].append(s)
        return tuple(torch.cat(parts).to(c.dtype) for parts, c in zip(out, context))


class SceneCutDetector:
    """Hard-cut detection on luma thumbnails, after FFmpeg's ``scdet`` filter, with fades excluded.

    On a 64-pixel-wide thumbnail (so grain does not count), r_t = mean |Y_t − k·Y_{t−1}| in
    8-bit code units, where k = mean Y_t / mean Y_{t−1} compensates a global gain (a fade in
    or out scales the signal: r stays near 0). As in scdet, score = min(r_t, |r_t − r_{t−1}|),
    so steady motion (a pan: large but constant r) does not count either; a cut when score ≥
    ``threshold`` (scdet's default, 10). The first difference after a reset has no r_{t−1}
    and is taken as steady.

    The same pair of thumbnails gives each frame a fade weight f = clamp(1 − 3·(r/Ȳ_t)/|ln k|,
    0, 1) when |ln k| ≥ ``min_fade_step`` (else 0; the means are floored at 0.01 code, so black
    to black is 0): the share of the frame-to-frame change that a global gain explains. A fade
    leaves only rounding behind (r/Ȳ ≲ 0.02 at |ln k| ≈ 0.33 per frame: f ≈ 0.85–1) and a
    dissolve between shots gets 0.1–0.7; a pan into the light changes the mean by a similar
    order per frame but moves the picture (r/Ȳ ≈ 0.05–0.08 at |ln k| ≈ 0.015: f = 0); grain
    leaves k at 1. The factor 3 was set on the film test's fades and dissolve: 2 followed a
    dissolve into a network's mid-level plateau (a 1.9 % reversal), 4 left 5.7 % of drift after it.
    :meth:`analyse` returns both; calling the detector returns the cuts.
    """

    def __init__(self, threshold: float = 10.0, width: int = 64, min_fade_step: float = 0.01) -> None:
        self.threshold = float(threshold)
        self.width = int(width)
        self.min_fade_step = float(min_fade_step)
        self.prev: Tensor | None = None
        self.prev_r: float | None = None

    def reset(self) -> None:
        self.prev, self.prev_r = None, None

    def __call__(self, rgb: Tensor) -> list[bool]:
        """Cut flags for each frame of ``rgb`` (N,3,H,W) SDR R'G'B' in [0,1], in stream order."""
        return self.analyse(rgb)[0]

    def analyse(self, rgb: Tensor) -> tuple[list[bool], list[float]]:
        """(cut flags, fade weights) for each frame of ``rgb`` (N,3,H,W) SDR R'G'B' in [0,1]."""
        from ..colour import rgb_to_ycbcr

        h, w = rgb.shape[-2:]
        tw = min(self.width, w)
        th = max(1, round(h * tw / w))
        small = torch.nn.functional.interpolate(rgb.float(), size=(th, tw), mode="area")
        thumbs = rgb_to_ycbcr(small, "bt709")[:, 0] * 255.0  # BT.709 luma, 8-bit units
        cuts, fades = [], []
        for t in thumbs:
            cut, fade = self.prev is None, 0.0
            if self.prev is not None:
                mean, prev_mean = float(t.mean()), float(self.prev.mean())
                k = mean / max(prev_mean, 1e-3)
                r = float((t - k * self.prev).abs().mean())
                prev_r = r if self.prev_r is None else self.prev_r
                cut = min(r, abs(r - prev_r)) >= self.threshold
                self.prev_r = None if cut else r
                step = abs(math.log(max(mean, 0.01) / max(prev_mean, 0.01)))  # black → black: 0
                if not cut and step >= self.min_fade_step:
                    fade = min(1.0, max(0.0, 1.0 - 3.0 * (r / max(mean, 1.0)) / step))
            self.prev = t
            cuts.append(cut)
            fades.append(fade)
        return cuts, fades
