"""A built-in synthetic SDR sample clip (no download): ``hdrvideo sample`` writes it.

The clip is 8-bit BT.709 limited-range H.264 with a stereo AAC tone, tagged
BT.709/BT.709/BT.709. It holds what an SDR→HDR conversion should be looked at on: a grey
ramp and SMPTE-like 75% bars (legal range and hue), a sky gradient with a bright moving sun
and specular glints (highlight expansion), skin-like tones, and fine moving detail (SR).
Y'CbCr is computed by :func:`hdrvideo.colour.rgb_to_planes`, not by swscale.
"""

from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
import torch

from ..colour import rgb_to_planes
from ..torch_threads import IntraOpThreads

__all__ = ["make_sample", "write_clip"]


class SampleScene:
    """The sample scene: ``scene(t, width, height)`` → one frame as (3,H,W) BT.709 R'G'B' in [0,1].

    What does not move (sky gradient, bars, grey ramp, the skin-tone disc) is drawn once per
    size and copied; each frame recomputes only what moves: the sun's glow in the sky (within
    the distance where it still adds more than 1/4 of an 8-bit code), the ground's stripes
    (a separable pattern: one row of sines times one column) and the blinking glint.
    """

    def __init__(self) -> None:
        self._size: tuple[int, int] | None = None

    def _setup(self, width: int, height: int) -> None:
        h, w = height, width
        self._size = (w, h)
        self.y = torch.linspace(0, 1, h).view(h, 1)
        self.x = torch.linspace(0, 1, w).view(1, w)
        self.aspect = w / h
        y, x = self.y.expand(h, w), self.x.expand(h, w)
        # sky: deep blue at the top to pale near the horizon; ground below 62 % of the height
        self.ground_top = int((self.y[:, 0] > 0.62).nonzero()[0]) if h > 1 else h
        bg = torch.stack([0.25 + 0.5 * y, 0.45 + 0.4 * y, 0.85 + 0.1 * y])
        # ground stripes: 0.5 + 0.5·sin(2π(x·w/6 + 3t))·sin(2π·y·h/9), drawn per frame
        self.ground_rows = torch.sin(2 * math.pi * self.y[self.ground_top :] * h / 9.0)  # (Hg,1)
        self.ground_lo = torch.tensor([0.30, 0.42, 0.18]).view(3, 1, 1)
        self.ground_amp = torch.tensor([0.15, 0.2, 0.08]).view(3, 1, 1)
        # bottom strip: 75 % bars and a grey ramp (drawn over the ground)
        bars = torch.tensor(
            [[0.75, 0.75, 0.75], [0.75, 0.75, 0], [0, 0.75, 0.75], [0, 0.75, 0], [0.75, 0, 0.75], [0.75, 0, 0], [0, 0, 0.75]]
        )
        bar_rgb = bars[(self.x[0] * 7).clamp(max=6.999).long()].T.unsqueeze(1).expand(3, h, w)
        strip = ((self.y > 0.88) & (self.y <= 0.94)).expand(h, w)
        ramp = (self.y > 0.94).expand(h, w)
        self.overlay = torch.where(strip, bar_rgb, torch.where(ramp, x.unsqueeze(0).expand(3, h, w), -1.0))
        # skin-tone disc (static); the glint beside it blinks
        self.cx, self.cy = 0.78, 0.72
        disc = (((x - self.cx) * self.aspect) ** 2 + (y - self.cy) ** 2) < 0.012
        self.overlay = torch.where(disc.unsqueeze(0), torch.tensor([0.87, 0.66, 0.55]).view(3, 1, 1), self.overlay)
        self.background = bg.contiguous()

    def __call__(self, t: float, width: int, height: int) -> torch.Tensor:
        if self._size != (width, height):
            self._setup(width, height)
        h, w, g0 = height, width, self.ground_top
        img = self.background.clone()
        # sun moving across, with a soft glow, clipped like a real SDR camera would
        sx, sy = 0.15 + 0.7 * ((t * 0.2) % 1.0), 0.28
        reach = 0.62  # 0.35·exp(-(0.62/0.25)²) < 1/1000: the glow ends there
        c0 = max(0, int((sx - reach / self.aspect) * (w - 1)))
        c1 = min(w, int((sx + reach / self.aspect) * (w - 1)) + 2)
        xs, ys = self.x[:, c0:c1], self.y[:g0]
        d2 = ((xs - sx) * self.aspect) ** 2 + (ys - sy) ** 2
        glow = torch.exp(d2 / -(0.09**2)) + 0.35 * torch.exp(d2 / -(0.25**2))
        sky = img[:, :g0, c0:c1]
        sky.add_(glow.unsqueeze(0) * torch.tensor([1.0, 0.92, 0.75]).view(3, 1, 1)).clamp_(0, 1)
        # ground: textured green-brown field with moving fine stripes (detail for SR)
        cols = torch.sin(2 * math.pi * (self.x * w / 6.0 + t * 3.0))  # (1,W)
        tex = (self.ground_rows * cols).mul_(0.5).add_(0.5)
        torch.addcmul(self.ground_lo, self.ground_amp, tex.unsqueeze(0), out=img[:, g0:])
        # static overlays (bars, ramp, disc) where set
        img = torch.where(self.overlay >= 0, self.overlay, img)
        # a specular glint beside the disc that blinks
        r2 = 0.0004 * (1.5 + math.sin(6 * t))
        gx, gy = self.cx + 0.02, self.cy - 0.03
        glint = (((self.x - gx) * self.aspect) ** 2 + (self.y - gy) ** 2) < r2
        return img.masked_fill_(glint.unsqueeze(0), 1.0)


_scene = SampleScene()


def write_clip(
    path: str,
    frames: list[torch.Tensor] | None = None,
    *,
    width: int = 640,
    height: int = 360,
    seconds: float = 4.0,
    fps: int = 24,
    audio: bool = True,
    crf: int = 18,
    scene=_scene,
) -> None:
    """Encode R'G'B' frames (or the sample scene) as 8-bit BT.709 limited-range H.264."""
    out = av.open(path, "w")
    try:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        cc = vs.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = 1, 1, 1, 1
        vs.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "log-level=error"}
        n = len(frames) if frames is not None else int(round(seconds * fps))
        a_s = None
        if audio:
            a_s = out.add_stream("aac", rate=48000, layout="stereo")
        samples_done = 0
        for i in range(n):
            rgb = frames[i] if frames is not None else scene(i / fps, width, height)
            y, cb, cr = rgb_to_planes(rgb.unsqueeze(0), "bt709", 8, False, "left", dtype=torch.uint8)
            f = av.VideoFrame(width, height, "yuv420p")
            for plane, src in zip(f.planes, (y[0], cb[0], cr[0])):
                dst = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
                dst[:, : src.shape[1]] = src.numpy()
            f.pts = i
            f.time_base = Fraction(1, fps)
            f.color_primaries, f.color_trc, f.colorspace, f.color_range = 1, 1, 1, 1
            for p in vs.encode(f):
                out.mux(p)
            if a_s is not None:
                target = int(round((i + 1) / fps * 48000))
                while samples_done + 1024 <= target:
                    tt = (samples_done + np.arange(1024)) / 48000
                    tone = (0.2 * np.sin(2 * np.pi * 440 * tt)).astype(np.float32)
                    af = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
                    af.sample_rate = 48000
                    af.pts = samples_done
                    af.time_base = Fraction(1, 48000)
                    for p in a_s.encode(af):
                        out.mux(p)
                    samples_done += 1024
        for p in vs.encode(None):
            out.mux(p)
        if a_s is not None:
            for p in a_s.encode(None):
                out.mux(p)
    finally:
        out.close()


def make_sample(path: str, width: int = 640, height: int = 360, seconds: float = 4.0, fps: int = 24) -> str:
    """Write the built-in sample clip to ``path`` and return the path."""
    with IntraOpThreads(1):  # small elementwise frames: more threads only spin
        write_clip(path, width=width, height=height, seconds=seconds, fps=fps)
    return path
