"""Decode stage: PyAV frames → batches of raw integer planes (no colour conversion here).

Planes are copied straight out of the decoded frames into (optionally pinned) batch buffers;
Y'CbCr→R'G'B' happens later on the processing device (:func:`hdrvideo.colour.planes_to_rgb`),
so swscale's BT.601 default never touches the pixels.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator

import av
import numpy as np
import torch

from ..errors import InputError, UnsupportedInputError
from .probe import VideoInfo, open_input

__all__ = ["PlaneLayout", "FrameBatch", "Decoder", "parse_time"]

log = logging.getLogger(__name__)

_PLANAR_YUV = re.compile(r"^(yuvj?)(420|422|444|440|411|410)p(\d+)?(le)?$")
_GRAY = re.compile(r"^gray(\d+)?(le)?$")
_SUBSAMPLING = {"420": (2, 2), "422": (2, 1), "444": (1, 1), "440": (1, 2), "411": (4, 1), "410": (4, 2)}


def parse_time(value: str | float | int | None) -> Fraction | None:
    """Seconds (``"12.5"``) or ``[HH:]MM:SS[.ms]`` → seconds as a Fraction; None passes through."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        t = Fraction(value).limit_denominator(1_000_000)
    else:
        text = value.strip()
        try:
            parts = text.split(":")
            if len(parts) > 3:
                raise ValueError
            t = Fraction(0)
            for part in parts:
                t = t * 60 + Fraction(part)
        except (ValueError, ZeroDivisionError):
            raise InputError(f"invalid time {value!r}: use seconds (12.5) or HH:MM:SS.ms") from None
    if t < 0:
        raise InputError(f"invalid time {value!r}: must not be negative")
    return t


@dataclass(frozen=True)
class PlaneLayout:
    """How the integer planes of a batch are to be interpreted."""

    kind: str  # "yuv", "gray" or "rgb"
    pix_fmt: str  # the planar format the planes are in
    bit_depth: int
    subsampling: tuple[int, int]  # (horizontal, vertical) chroma factors
    width: int
    height: int

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.bit_depth <= 8 else np.uint16)

    def plane_shapes(self) -> list[tuple[int, int]]:
        if self.kind == "gray":
            return [(self.height, self.width)]
        sx, sy = self.subsampling
        c = (-(-self.height // sy), -(-self.width // sx))
        return [(self.height, self.width), c, c]


def layout_for(pix_fmt: str, width: int, height: int, is_rgb: bool) -> PlaneLayout:
    """The planar layout frames of ``pix_fmt`` are read in (reformatting non-planar ones)."""
    m = _PLANAR_YUV.match(pix_fmt)
    if m and (m.group(3) is None or m.group(4)):
        depth = int(m.group(3) or 8)
        return PlaneLayout("yuv", pix_fmt, depth, _SUBSAMPLING[m.group(2)], width, height)
    g = _GRAY.match(pix_fmt)
    if g and (g.group(1) is None or g.group(2)):
        return PlaneLayout("gray", pix_fmt, int(g.group(1) or 8), (1, 1), width, height)
    try:
        fmt = av.VideoFormat(pix_fmt)
        depth = max(c.bits for c in fmt.components)
    except (ValueError, av.error.FFmpegError):
        raise UnsupportedInputError(f"unsupported pixel format {pix_fmt}") from None
    if is_rgb or fmt.is_rgb:
        return PlaneLayout("rgb", "gbrp" if depth <= 8 else "gbrp16le", 8 if depth <= 8 else 16, (1, 1), width, height)
    # packed / semi-planar Y'CbCr (nv12, p010, yuyv422, …): repack to planar, same subsampling
    cw = fmt.chroma_width(width) or width
    ch = fmt.chroma_height(height) or height
    sx, sy = max(1, round(width / cw)), max(1, round(height / ch))
    sub = {v: k for k, v in _SUBSAMPLING.items()}.get((sx, sy), "444")
    if depth <= 8:
        return PlaneLayout("yuv", f"yuv{sub}p", 8, _SUBSAMPLING[sub], width, height)
    return PlaneLayout("yuv", f"yuv{sub}p16le", 16, _SUBSAMPLING[sub], width, height)


@dataclass
class FrameBatch:
    """N decoded frames of one size: integer planes (N,h,w) each, and their timestamps."""

    planes: list[torch.Tensor]
    pts: list[int]
    first_index: int
    release: object = None  # callback returning the buffers to the pool

    @property
    def size(self) -> int:
        return len(self.pts)


class _BufferPool:
    """A fixed ring of batch buffers (pinned when feeding a GPU); bounds host memory."""

    def __init__(self, layout: PlaneLayout, batch: int, count: int, pin: bool) -> None:
        import queue

        self._free: queue.Queue = queue.Queue()
        torch_dtype = torch.uint8 if layout.bit_depth <= 8 else torch.int16  # uint16 bits, viewed as int16
        for _ in range(count):
            bufs = [torch.empty((batch, *shape), dtype=torch_dtype, pin_memory=pin) for shape in layout.plane_shapes()]
            self._free.put(bufs)

    def get(self, timeout: float | None = None) -> list[torch.Tensor]:
        return self._free.get(timeout=timeout)

    def put(self, bufs: list[torch.Tensor]) -> None:
        self._free.put(bufs)


@dataclass
class DecodeStats:
    frames: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    rotation: int = 0


class Decoder:
    """Iterates :class:`FrameBatch` es of a span of a video stream.

    ``start``/``duration`` select frames whose presentation time t (relative to the stream's
    start) satisfies start ≤ t < start + duration. A truncated or corrupt tail ends the stream
    with a warning once at least one frame decoded; a file that decodes nothing is an error.
    """

    def __init__(
        self,
        path: str,
        info: VideoInfo,
        start: Fraction | None = None,
        duration: Fraction | None = None,
        batch: int = 4,
        pin_memory: bool = False,
        buffers: int = 4,
        threads: int = 0,
    ) -> None:
        self.path = path
        self.info = info
        self.start = start or Fraction(0)
        self.end = None if duration is None else self.start + duration
        self.batch = max(1, int(batch))
        self.layout = layout_for(info.pix_fmt, info.width, info.height, info.is_rgb)
        self.pool = _BufferPool(self.layout, self.batch, buffers, pin_memory)
        self.threads = threads
        self.stats = DecodeStats()
        self.stop = False

    # -- frames ---------------------------------------------------------------------------
    def _frames(self) -> Iterator[av.VideoFrame]:
        container = open_input(self.path)
        try:
            stream = container.streams[self.info.index]
            stream.thread_type = "AUTO"
            if self.threads:
                stream.thread_count = self.threads
            tb = stream.time_base
            t0 = Fraction(self.info.start_time).limit_denominator(10**9)
            if self.start > 0:
                target = int((t0 + self.start) / tb)
                try:
                    container.seek(target, stream=stream, backward=True, any_frame=False)
                except av.error.FFmpegError:
                    log.warning("seek failed; decoding from the beginning")
            decoded_any = False
            last_pts = None
            frame_dur = int(round(1 / (self.info.rate * tb))) if self.info.rate else 1
            try:
                for packet in container.demux(stream):
                    for frame in packet.decode():
                        decoded_any = True
                        pts = frame.pts
                        if pts is None:
                            pts = (last_pts + frame_dur) if last_pts is not None else 0
                        last_pts = pts
                        t = pts * tb - t0
                        if t < self.start:
                            continue
                        if self.end is not None and t >= self.end:
                            return
                        frame.pts = pts
                        yield frame
                    if self.stop:
                        return
            except av.error.FFmpegError as err:
                if not decoded_any:
                    raise InputError(f"cannot decode {self.path}: {err.strerror or err}") from err
                msg = f"input is damaged or truncated after {self.stats.frames} frames ({err.strerror or err}); converted what decodes"
                log.warning(msg)
                self.stats.warnings.append(msg)
            if not decoded_any:
                raise InputError(f"no decodable video frames in {self.path}")
        finally:
            # Drain the decoder before closing: PyAV frees the codec context while holding the
            # GIL, and a frame thread still busy (and logging through PyAV's callback) would then
            # wait for the GIL forever.
            try:
                for _ in container.streams[self.info.index].decode(None):
                    pass
            except (av.error.FFmpegError, ValueError, IndexError):
                pass
            container.close()

    def _copy_planes(self, frame: av.VideoFrame, bufs: list[torch.Tensor], i: int) -> None:
        lay = self.layout
        if frame.format.name != lay.pix_fmt:
            frame = frame.reformat(format=lay.pix_fmt)
        if frame.width != lay.width or frame.height != lay.height:
            raise UnsupportedInputError(
                f"frame size changes mid-stream ({lay.width}×{lay.height} → {frame.width}×{frame.height}); not supported"
            )
        itemsize = lay.dtype.itemsize
        order = (2, 0, 1) if lay.kind == "rgb" else range(len(bufs))  # gbrp planes are G, B, R
        for dst_index, src_index in enumerate(order):
            plane = frame.planes[src_index]
            h, w = bufs[dst_index].shape[1:]
            arr = np.frombuffer(plane, dtype=lay.dtype).reshape(plane.height, plane.line_size // itemsize)
            bufs[dst_index][i].numpy().view(lay.dtype)[...] = arr[:h, :w]

    def __iter__(self) -> Iterator[FrameBatch]:
        bufs = None
        pts: list[int] = []
        first = 0
        for frame in self._frames():
            if self.stats.frames == 0:
                self.stats.rotation = int(getattr(frame, "rotation", 0) or 0)
            if bufs is None:
                bufs = self._take_buffers()
                if bufs is None:
                    return
                pts = []
                first = self.stats.frames
            self._copy_planes(frame, bufs, len(pts))
            pts.append(int(frame.pts))
            self.stats.frames += 1
            if len(pts) == self.batch:
                yield FrameBatch([b for b in bufs], pts, first, release=self._releaser(bufs))
                bufs = None
        if bufs is not None and pts:
            yield FrameBatch([b[: len(pts)] for b in bufs], pts, first, release=self._releaser(bufs))

    def _take_buffers(self) -> list[torch.Tensor] | None:
        """A free batch buffer, waiting while the consumer holds them all; None once stopped."""
        import queue

        while not self.stop:
            try:
                return self.pool.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def _releaser(self, bufs):
        return lambda: self.pool.put(bufs)
