"""Still-image I/O for training and evaluation: Radiance RGBE (.hdr) and 8/16-bit PNG.

No image library beyond what hdrvideo already depends on: RGBE is decoded with numpy
(Radiance's run-length scanlines), PNG goes through PyAV's FFmpeg ``png`` codec.
Arrays are ``(H, W, 3)`` in R, G, B order.
"""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np

__all__ = ["read_rgbe", "read_png", "write_png"]


def _decode_scanline_rle(buf: memoryview, pos: int, width: int) -> tuple[np.ndarray, int]:
    """One "new" RLE scanline (4 separately run-length-coded components) → (4, width) uint8."""
    line = np.zeros((4, width), np.uint8)
    for ch in range(4):
        x = 0
        row = line[ch]
        while x < width:
            n = buf[pos]
            pos += 1
            if n > 128:  # run
                n -= 128
                n = min(n, width - x)
                row[x : x + n] = buf[pos]
                pos += 1
            else:  # literal
                if n == 0:
                    raise ValueError("bad RGBE run length 0")
                n = min(n, width - x)
                row[x : x + n] = np.frombuffer(buf[pos : pos + n], np.uint8)
                pos += n
            x += n
    return line, pos


def read_rgbe(path: str | Path) -> np.ndarray:
    """Read a Radiance RGBE ``.hdr`` file → float32 ``(H, W, 3)`` linear RGB.

    Supports the ``-Y H +X W`` orientation with flat or new-style RLE scanlines. Values are
    decoded as ``(m + 0.5)·2^(e-136)`` (Radiance's ``colr_color``), 0 where ``e == 0``.
    """
    data = Path(path).read_bytes()
    if not (data.startswith(b"#?RADIANCE") or data.startswith(b"#?RGBE")):
        raise ValueError(f"{path}: not a Radiance .hdr file")
    end = data.find(b"\n\n")
    if end < 0:
        raise ValueError(f"{path}: no header terminator")
    header = data[:end].decode("latin-1")
    if "FORMAT=" in header and "32-bit_rle_rgbe" not in header:
        raise ValueError(f"{path}: only 32-bit_rle_rgbe is supported")
    nl = data.index(b"\n", end + 2)
    res = data[end + 2 : nl].decode("latin-1").strip()
    m = re.fullmatch(r"-Y\s+(\d+)\s+\+X\s+(\d+)", res)
    if not m:
        raise ValueError(f"{path}: unsupported resolution line {res!r}")
    height, width = int(m.group(1)), int(m.group(2))
    buf = memoryview(data)
    pos = nl + 1
    out = np.zeros((height, width, 4), np.uint8)
    for y in range(height):
        if (
            8 <= width < 32768
            and buf[pos] == 2
            and buf[pos + 1] == 2
            and ((buf[pos + 2] << 8) | buf[pos + 3]) == width
        ):
            line, pos = _decode_scanline_rle(buf, pos + 4, width)
            out[y] = line.T
        else:  # flat scanline (no old-style RLE repeats in practice)
            out[y] = np.frombuffer(buf[pos : pos + 4 * width], np.uint8).reshape(width, 4)
            pos += 4 * width
    e = out[..., 3].astype(np.int32)
    scale = np.where(e > 0, np.ldexp(1.0, e - 136), 0.0).astype(np.float32)
    return (out[..., :3].astype(np.float32) + 0.5) * scale[..., None]


def read_png(path: str | Path) -> np.ndarray:
    """Read an RGB PNG → ``(H, W, 3)`` uint8 (8-bit files) or uint16 (16-bit files)."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        name = frame.format.name
        if name in ("rgb48be", "rgb48le", "rgba64be", "rgba64le", "gray16be", "gray16le"):
            return frame.to_ndarray(format="rgb48le")
        return frame.to_ndarray(format="rgb24")


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write ``(H, W, 3)`` uint8 or uint16 as an 8- or 16-bit RGB PNG."""
    array = np.ascontiguousarray(array)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError("write_png expects an (H, W, 3) array")
    h, w = array.shape[:2]
    if array.dtype == np.uint8:
        src_fmt, dst_fmt = "rgb24", "rgb24"
    elif array.dtype == np.uint16:
        src_fmt, dst_fmt = "rgb48le", "rgb48be"
    else:
        raise ValueError(f"write_png: unsupported dtype {array.dtype}")
    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, dst_fmt
    frame = av.VideoFrame.from_ndarray(array, format=src_fmt)
    if src_fmt != dst_fmt:
        frame = frame.reformat(format=dst_fmt)
    packets = ctx.encode(frame) + ctx.encode(None)
    Path(path).write_bytes(b"".join(bytes(p) for p in packets))
