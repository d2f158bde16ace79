"""Banding measurements: smooth test gradients, step height, and CAMBI when available.

* :func:`gradient_planes` — a smooth ``dark`` (horizontal, near black) or ``sky`` (vertical,
  blue to pale) gradient designed in float R'G'B' and quantised once to 8-bit limited-range
  BT.709 Y'CbCr 4:2:0, as a camera or an encoder would store it.
* :func:`step_height` — the mean height, in codes, of the coherent jumps (the same on every
  line) along the gradient direction of a decoded plane: a smooth 10-bit ramp has steps of at
  most 1 code, an expanded 8-bit staircase of several.
* :func:`cambi` — Netflix's CAMBI banding index (libvmaf) on a PQ file, through the FFmpeg that
  the ``imageio-ffmpeg`` package ships; ``None`` when that FFmpeg or its libvmaf is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from . import colour

__all__ = ["GRADIENTS", "gradient_rgb", "gradient_planes", "write_gradient_clip", "decoded_luma", "step_height",
           "imageio_ffmpeg_exe", "cambi"]

#: name → (direction of the gradient: "x" or "y", R'G'B' at the start, R'G'B' at the end)
GRADIENTS: dict[str, tuple[str, tuple[float, float, float], tuple[float, float, float]]] = {
    "dark": ("x", (0.02, 0.02, 0.03), (0.17, 0.16, 0.18)),
    "sky": ("y", (0.22, 0.42, 0.78), (0.72, 0.81, 0.93)),
}


def gradient_rgb(kind: str, width: int, height: int) -> torch.Tensor:
    """The float BT.709 R'G'B' (1,3,H,W) of a smooth test gradient (a linear ramp in R'G'B')."""
    axis, start, end = GRADIENTS[kind]
    n = width if axis == "x" else height
    t = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    a = torch.tensor(start, dtype=torch.float64).view(3, 1)
    b = torch.tensor(end, dtype=torch.float64).view(3, 1)
    ramp = a + (b - a) * t  # (3, n)
    if axis == "x":
        rgb = ramp[:, None, :].expand(3, height, width)
    else:
        rgb = ramp[:, :, None].expand(3, height, width)
    return rgb[None].contiguous()


def gradient_planes(kind: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-bit limited-range BT.709 Y'CbCr 4:2:0 planes (uint8) of :func:`gradient_rgb`.

    Y' is quantised from the float signal; chroma is decimated (co-sited "left", as H.264/HEVC
    assume) in float and quantised once.
    """
    rgb = gradient_rgb(kind, width, height)
    y, cb, cr = colour.rgb_to_planes(rgb, "bt709", 8, False, "left")
    return tuple(p[0].numpy().astype(np.uint8) for p in (y, cb, cr))  # type: ignore[return-value]


def write_gradient_clip(path: str | os.PathLike[str], kind: str, width: int, height: int, frames: int = 3) -> Path:
    """An FFV1 (lossless) Matroska clip of :func:`gradient_planes`, tagged BT.709 limited range."""
    import av
    from fractions import Fraction

    planes = gradient_planes(kind, width, height)
    path = Path(path)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("ffv1", rate=24)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        cc = vs.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = 1, 1, 1, 1
        for i in range(frames):
            f = av.VideoFrame(width, height, "yuv420p")
            for plane, src in zip(f.planes, planes):
                dst = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
                dst[:, : src.shape[1]] = src
            f.pts, f.time_base = i, Fraction(1, 24)
            f.color_primaries, f.color_trc, f.colorspace, f.color_range = 1, 1, 1, 1
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    return path


def decoded_luma(path: str | os.PathLike[str]) -> list[np.ndarray]:
    """The Y' plane of every frame of a video file, as integer codes (no conversion)."""
    import av

    out = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            p = frame.planes[0]
            itemsize = 2 if frame.format.name.endswith(("10le", "12le", "16le")) else 1
            arr = np.frombuffer(p, np.uint16 if itemsize == 2 else np.uint8).reshape(p.height, p.line_size // itemsize)
            out.append(arr[:, : p.width].astype(np.int32))
    return out


def step_height(plane: np.ndarray | torch.Tensor, axis: str, margin: int = 4) -> float:
    """Mean height (codes) of the coherent steps of a gradient along ``axis`` ("x" or "y").

    The jump between neighbouring samples along the gradient is averaged over all lines across
    it (a band edge is the same jump on every line; noise, dither and compression ringing are
    not and average out); the result is the mean of those line-averaged jumps that are at least
    half a code. A staircase gives its step height (an 8-bit staircase expanded into 10-bit PQ:
    4–6 codes in the shadows), a smooth ramp rounded to N bits 1, a dithered or noisy one less
    (its largest line-averaged jump when none reaches half a code). ``margin`` samples at each
    border are left out; 0 for a flat plane.
    """
    p = torch.as_tensor(np.asarray(plane, dtype=np.int32)).double()
    if axis == "y":
        p = p.T
    if margin:
        p = p[margin:-margin, margin:-margin]
    jumps = p.diff(dim=1).mean(dim=0).abs()
    steps = jumps[jumps >= 0.5]
    if steps.numel():
        return float(steps.mean())
    return float(jumps.max()) if jumps.numel() else 0.0


def imageio_ffmpeg_exe() -> str | None:
    """The FFmpeg binary of the ``imageio-ffmpeg`` package (FFmpeg 9 with libvmaf and
    libplacebo), or None when the package is not installed."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        return None
    return exe if exe and os.path.isfile(exe) else None


def cambi(path: str | os.PathLike[str], eotf: str = "pq", ffmpeg: str | None = None) -> float | None:
    """Mean CAMBI (libvmaf, Netflix's contrast-aware banding index; 0 = none, ≥ 5 visible) of a
    video file, or None when no FFmpeg with libvmaf is available. ``eotf="pq"`` for HDR10."""
    exe = ffmpeg or imageio_ffmpeg_exe()
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "cambi.json"
        graph = f"[0:v][1:v]libvmaf=feature='name=cambi\\:eotf={eotf}':log_fmt=json:log_path={log}"
        cmd = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path), "-i", str(path),
               "-lavfi", graph, "-f", "null", "-"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 or not log.is_file():
            if "libvmaf" in res.stderr and ("No such filter" in res.stderr or "not found" in res.stderr):
                return None
            raise RuntimeError(f"CAMBI failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}")
        data = json.loads(log.read_text())
    # the feature is reported as "cambi" or, with options, e.g. "cambi_eotf_pq"
    for key, pooled in data.get("pooled_metrics", {}).items():
        if key.startswith("cambi"):
            return float(pooled["mean"])
    raise RuntimeError("CAMBI missing from libvmaf's log")
