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

__all__ = ["make_sample", "write_clip"]


def _scene(t: float, width: int, height: int) -> torch.Tensor:
    """One frame of the sample scene as (3,H,W) BT.709 R'G'B' in [0,1]."""
    y = torch.linspace(0, 1, height).view(height, 1).expand(height, width)
    x = torch.linspace(0, 1, width).view(1, width).expand(height, width)
    # sky: deep blue at the top to pale near the horizon
    sky = torch.stack([0.25 + 0.5 * y, 0.45 + 0.4 * y, 0.85 + 0.1 * y])
    # sun moving across, with a soft glow, clipped like a real SDR camera would
    sx, sy = 0.15 + 0.7 * ((t * 0.2) % 1.0), 0.28
    d = torch.sqrt(((x - sx) * width / height) ** 2 + (y - sy) ** 2)
    glow = torch.exp(-((d / 0.09) ** 2)) + 0.35 * torch.exp(-((d / 0.25) ** 2))
    img = (sky + glow.unsqueeze(0) * torch.tensor([1.0, 0.92, 0.75]).view(3, 1, 1)).clamp(0, 1)
    # ground: textured green-brown field with moving fine stripes (detail for SR)
    ground = y > 0.62
    tex = 0.5 + 0.5 * torch.sin(2 * math.pi * (x * width / 6.0 + t * 3.0)) * torch.sin(2 * math.pi * y * height / 9.0)
    field = torch.stack([0.30 + 0.15 * tex, 0.42 + 0.2 * tex, 0.18 + 0.08 * tex])
    img = torch.where(ground.unsqueeze(0), field, img)
    # skin-tone disc and a specular glint that blinks
    cx, cy = 0.78, 0.72
    disc = (((x - cx) * width / height) ** 2 + (y - cy) ** 2) < 0.012
    img = torch.where(disc.unsqueeze(0), torch.tensor([0.87, 0.66, 0.55]).view(3, 1, 1), img)
    glint = (((x - cx - 0.02) * width / height) ** 2 + (y - cy + 0.03) ** 2) < 0.0004 * (1.5 + math.sin(6 * t))
    img = torch.where(glint.unsqueeze(0), torch.ones(3, 1, 1), img)
    # bottom strip: 75% bars and a grey ramp
    bars = torch.tensor(
        [[0.75, 0.75, 0.75], [0.75, 0.75, 0], [0, 0.75, 0.75], [0, 0.75, 0], [0.75, 0, 0.75], [0.75, 0, 0], [0, 0, 0.75]]
    )
    bar_idx = (x * 7).clamp(max=6.999).long()
    bar_rgb = bars[bar_idx].permute(2, 0, 1)
    img = torch.where(((y > 0.88) & (y <= 0.94)).unsqueeze(0), bar_rgb, img)
    img = torch.where((y > 0.94).unsqueeze(0), x.unsqueeze(0).expand(3, -1, -1), img)
    return img


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
            y, cb, cr = rgb_to_planes(rgb.unsqueeze(0), "bt709", 8, False, "left")
            f = av.VideoFrame(width, height, "yuv420p")
            for plane, src in zip(f.planes, (y[0], cb[0], cr[0])):
                dst = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
                dst[:, : src.shape[1]] = src.numpy().astype(np.uint8)
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
    write_clip(path, width=width, height=height, seconds=seconds, fps=fps)
    return path
