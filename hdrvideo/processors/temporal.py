"""Temporal stability of image-level statistics: smoothing over time, reset at scene cuts.

Networks with whole-frame statistics (IRNet's channel attention, GPGMNet's global priors,
AGCM's condition vector) recompute them on every frame, so grain, noise and small motions make
them — and the whole picture's brightness and colour — jitter from frame to frame. Here the
statistics of each frame are replaced by an exponential moving average over the frames of the
same shot, restarted at every scene cut (:class:`SceneCutDetector`), so nothing is smoothed
across a cut and the first frame of a shot is exact.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["TemporalContext", "SceneCutDetector", "DEFAULT_TIME_CONSTANT_S"]

#: Default smoothing time constant in seconds (the statistics' step response reaches 63 % after
#: this long): long enough to average out grain and codec noise, short enough to follow a fade.
DEFAULT_TIME_CONSTANT_S = 1.0


class TemporalContext:
    """EMA of per-frame statistics: s_t = a·s_{t−1} + (1 − a)·c_t, a = exp(−1/τ), s = c at cuts.

    ``time_constant`` τ is in frames. ``context`` tensors have the batch (frames, in stream
    order) as their first axis; the state carries over between calls.
    """

    def __init__(self, time_constant: float) -> None:
        self.time_constant = float(time_constant)
        self.a = math.exp(-1.0 / self.time_constant) if self.time_constant > 0 else 0.0
        self.state: tuple[Tensor, ...] | None = None

    def reset(self) -> None:
        self.state = None

    def __call__(self, context: tuple[Tensor, ...], cuts: list[bool]) -> tuple[Tensor, ...]:
        n = context[0].shape[0]
        out: list[list[Tensor]] = [[] for _ in context]
        for i in range(n):
            frame = tuple(c[i: i + 1].float() for c in context)
            if self.state is None or (i < len(cuts) and cuts[i]) or self.a == 0.0:
                self.state = frame
            else:
                self.state = tuple(self.a * s + (1.0 - self.a) * f for s, f in zip(self.state, frame))
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
    """

    def __init__(self, threshold: float = 10.0, width: int = 64) -> None:
        self.threshold = float(threshold)
        self.width = int(width)
        self.prev: Tensor | None = None
        self.prev_r: float | None = None

    def reset(self) -> None:
        self.prev, self.prev_r = None, None

    def __call__(self, rgb: Tensor) -> list[bool]:
        """Cut flags for each frame of ``rgb`` (N,3,H,W) SDR R'G'B' in [0,1], in stream order."""
        from ..colour import rgb_to_ycbcr

        h, w = rgb.shape[-2:]
        tw = min(self.width, w)
        th = max(1, round(h * tw / w))
        small = torch.nn.functional.interpolate(rgb.float(), size=(th, tw), mode="area")
        thumbs = rgb_to_ycbcr(small, "bt709")[:, 0] * 255.0  # BT.709 luma, 8-bit units
        cuts = []
        for t in thumbs:
            cut = self.prev is None
            if self.prev is not None:
                k = float(t.mean()) / max(float(self.prev.mean()), 1e-3)
                r = float((t - k * self.prev).abs().mean())
                prev_r = r if self.prev_r is None else self.prev_r
                cut = min(r, abs(r - prev_r)) >= self.threshold
                self.prev_r = None if cut else r
            self.prev = t
            cuts.append(cut)
        return cuts
