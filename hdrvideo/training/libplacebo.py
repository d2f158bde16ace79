"""FFmpeg's ``libplacebo`` inverse tone mapping as an evaluation baseline (not used by conversions).

libplacebo (mpv's renderer) expands SDR into HDR with ``inverse_tonemapping=1``; FFmpeg exposes
it as the ``libplacebo`` filter. The FFmpeg that the ``imageio-ffmpeg`` package ships (FFmpeg 9)
has it; it needs a Vulkan device, which on a machine without a GPU is Mesa's software
rasteriser ``lavapipe`` (Debian: ``mesa-vulkan-drivers``), created with ``-init_hw_device``
because libplacebo itself skips software devices.

The SDR frames go in as 8-bit BT.709 R'G'B' (``gbrp``, full range, tagged BT.709 primaries and
transfer, which libplacebo reads as BT.1886 with SDR white at 203 cd/m²) and come back as float
PQ BT.2020 R'G'B' (``gbrpf32le``). Dynamic peak detection and dithering are off, so each frame
is mapped on its own and exactly. The FFmpeg filter has no control over the target display's
peak: a PQ target without mastering metadata is taken as 10 000 cd/m², so SDR white goes there.
:func:`inverse_tone_map` can roll the result off to a mastering peak afterwards
(:func:`hdrvideo.colour.pq_roll_off`, as every hdrvideo conversion does).
"""

from __future__ import annotations

import subprocess
from typing import Iterable

import numpy as np
import torch
from torch import Tensor

from .. import colour
from ..banding import imageio_ffmpeg_exe

__all__ = ["available", "inverse_tone_map", "LibplaceboBaseline"]


def _filter(tonemapping: str) -> str:
    return (
        "setparams=color_primaries=bt709:color_trc=bt709:colorspace=gbr:range=pc,"
        f"libplacebo=inverse_tonemapping=1:tonemapping={tonemapping}:peak_detect=0:dithering=none:"
        "color_primaries=bt2020:color_trc=smpte2084:colorspace=gbr:range=pc:format=gbrpf32le"
    )


def _run(exe: str, frames: np.ndarray, tonemapping: str) -> np.ndarray:
    """(N,3,H,W) uint8 R'G'B' → (N,3,H,W) float32 PQ R'G'B' through one FFmpeg run."""
    n, _, h, w = frames.shape
    gbr = np.ascontiguousarray(frames[:, [1, 2, 0]])  # gbrp plane order: G, B, R
    cmd = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-init_hw_device", "vulkan=vk:0",
           "-filter_hw_device", "vk", "-f", "rawvideo", "-pix_fmt", "gbrp", "-s", f"{w}x{h}", "-r", "25",
           "-i", "-", "-vf", _filter(tonemapping), "-f", "rawvideo", "-"]
    res = subprocess.run(cmd, input=gbr.tobytes(), capture_output=True)
    want = n * 3 * h * w * 4
    if res.returncode != 0 or len(res.stdout) != want:
        msg = res.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"FFmpeg libplacebo failed: {msg[-1] if msg else res.returncode}")
    out = np.frombuffer(res.stdout, np.float32).reshape(n, 3, h, w)
    return np.ascontiguousarray(out[:, [2, 0, 1]])  # back to R, G, B


def available(exe: str | None = None) -> bool:
    """True if an FFmpeg with the libplacebo filter and a working Vulkan device is here."""
    exe = exe or imageio_ffmpeg_exe()
    if exe is None:
        return False
    try:
        _run(exe, np.zeros((1, 3, 16, 16), np.uint8), "auto")
    except (RuntimeError, OSError):
        return False
    return True


def inverse_tone_map(sdr: Tensor, tonemapping: str = "auto", peak: float | None = None,
                     exe: str | None = None) -> Tensor:
    """libplacebo's inverse tone mapping of (N,3,H,W) BT.709 R'G'B' in [0,1] (8-bit values) →
    PQ BT.2020 R'G'B'; with ``peak``, rolled off to it afterwards (BT.2390 EETF on max RGB)."""
    exe = exe or imageio_ffmpeg_exe()
    if exe is None:
        raise RuntimeError("no FFmpeg with libplacebo (pip install imageio-ffmpeg)")
    codes = torch.round(sdr.detach().float().clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
    out = torch.from_numpy(_run(exe, codes, tonemapping)).clamp_(0.0, 1.0)
    if peak is not None:
        out = colour.pq_roll_off(out, float(peak))
    return out.to(sdr.device)


class LibplaceboBaseline:
    """A per-image callable for :func:`hdrvideo.training.evaluate.compare` that maps all images
    of a set in one FFmpeg run per image size (:meth:`prepare`) and looks them up by content."""

    def __init__(self, tonemapping: str = "auto", peak: float | None = None) -> None:
        self.tonemapping = tonemapping
        self.peak = peak
        self.exe = imageio_ffmpeg_exe()
        self._cache: dict[bytes, Tensor] = {}

    @staticmethod
    def _key(codes: np.ndarray) -> bytes:
        import hashlib

        return hashlib.sha1(codes.tobytes() + str(codes.shape).encode()).digest()

    def prepare(self, images: Iterable[Tensor]) -> None:
        groups: dict[tuple[int, ...], list[np.ndarray]] = {}
        for img in images:
            codes = torch.round(img.detach().float().clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
            for one in codes.reshape(-1, *codes.shape[-3:]):
                groups.setdefault(one.shape, []).append(one)
        for batch in groups.values():
            stack = np.stack(batch)
            out = _run(self.exe, stack, self.tonemapping)
            for one, res in zip(stack, out):
                self._cache[self._key(one)] = torch.from_numpy(res.copy())

    def __call__(self, sdr: Tensor) -> Tensor:
        codes = torch.round(sdr.detach().float().clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
        outs = []
        for one in codes.reshape(-1, *codes.shape[-3:]):
            res = self._cache.get(self._key(one))
            if res is None:
                res = torch.from_numpy(_run(self.exe, one[None], self.tonemapping)[0])
            outs.append(res)
        out = torch.stack(outs).reshape(*sdr.shape[:-3], *outs[0].shape).clamp_(0.0, 1.0)
        if self.peak is not None:
            out = colour.pq_roll_off(out, float(self.peak))
        return out.to(sdr.device)
