"""Crop: remove letterbox/pillarbox bars before any processing (``--crop auto|W:H:X:Y``).

The decoder copies only the crop rectangle out of each decoded frame
(:class:`hdrvideo.media.decode.Decoder`), so the bars never reach the device, the network or
the encoder. Offsets must be whole chroma samples (even for 4:2:0) and the size even, so the
chroma planes are cut exactly where the luma is and their siting is kept.

**Auto-detection** (:func:`detect_crop`) is a pre-pass at plan time, like FFmpeg's
``cropdetect`` but on the decoded luma and robust to fades and dark scenes:

* up to :data:`SAMPLES` frames spread evenly over the file are decoded (seeking to the
  keyframe before each position);
* a row (column) of a frame is *black* when at most 2 % of its luma samples lie above black
  + 8 codes (8-bit scale): Y' ≤ 24 for limited range, ≤ 8 for full range (R'G'B' input: the
  largest component);
* a frame's bars are its leading/trailing black rows and columns; frames that are black
  throughout (fades, black scenes) say nothing and are skipped;
* the picture is the union of all other frames' non-black areas, so a dark scene that reaches
  black at an edge never cuts the picture as long as one sampled frame lights that edge;
* the rectangle is then rounded inwards to whole chroma samples and even sizes, so no black
  line is left at an edge (at most one picture row/column per side is lost to the rounding).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from ..errors import InputError, UsageError
from .probe import VideoInfo, close_decoding, open_input

__all__ = ["CropRect", "parse_crop", "check_crop", "detect_crop", "SAMPLES"]

log = logging.getLogger(__name__)

SAMPLES = 24
BLACK_MARGIN = 8  # codes above black (8-bit scale) that still count as black
OUTLIER_FRACTION = 0.02  # share of samples in a black row/column that may exceed the threshold


@dataclass(frozen=True)
class CropRect:
    """A crop rectangle in source pixels (FFmpeg ``crop=w:h:x:y`` order)."""

    width: int
    height: int
    x: int
    y: int

    def __str__(self) -> str:
        return f"{self.width}:{self.height}:{self.x}:{self.y}"


def parse_crop(text: str) -> CropRect:
    """``"W:H:X:Y"`` → :class:`CropRect` (syntax only; :func:`check_crop` checks it against a video)."""
    m = re.fullmatch(r"\s*(\d+):(\d+):(\d+):(\d+)\s*", str(text))
    if not m:
        raise UsageError(f"invalid --crop {text!r}: use auto or W:H:X:Y (pixels)")
    return CropRect(*(int(v) for v in m.groups()))


def _subsampling(video: VideoInfo) -> tuple[int, int]:
    from .decode import layout_for

    return layout_for(video.pix_fmt, video.width, video.height, video.is_rgb).subsampling


def check_crop(rect: CropRect, video: VideoInfo) -> CropRect:
    """Refuse (one line) a rectangle outside the frame or not on whole chroma samples."""
    sx, sy = _subsampling(video)
    if rect.width < 2 or rect.height < 2 or rect.x + rect.width > video.width or rect.y + rect.height > video.height:
        raise UsageError(f"--crop {rect} does not fit in the {video.width}×{video.height} frame")
    if rect.x % sx or rect.y % sy:
        raise UsageError(f"--crop {rect}: X and Y must be multiples of {sx} and {sy} (whole chroma samples)")
    if rect.width % max(2, sx) or rect.height % max(2, sy):
        raise UsageError(f"--crop {rect}: width and height must be even (4:2:0 output)")
    return rect


def _black_runs(black: np.ndarray) -> tuple[int, int]:
    """Leading and trailing run lengths of True in a 1-D bool array."""
    n = len(black)
    if black.all():
        return n, n
    lead = int(np.argmin(black))
    trail = int(np.argmin(black[::-1]))
    return lead, trail


def frame_bars(luma: np.ndarray, black_level: int, threshold: int) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) black bars of one frame's luma, or None if it is all black."""
    above = luma > black_level + threshold
    rows = above.mean(axis=1) <= OUTLIER_FRACTION
    if rows.all():
        return None
    cols = above.mean(axis=0) <= OUTLIER_FRACTION
    top, bottom = _black_runs(rows)
    left, right = _black_runs(cols)
    return top, bottom, left, right


def _luma(frame: av.VideoFrame, video: VideoInfo) -> tuple[np.ndarray, int, int]:
    """The frame's luma (or max R'G'B') at its bit depth, the black level and the threshold."""
    from .decode import layout_for

    lay = layout_for(video.pix_fmt, video.width, video.height, video.is_rgb)
    if frame.format.name != lay.pix_fmt:
        frame = frame.reformat(format=lay.pix_fmt)
    dtype = lay.dtype
    planes = [np.frombuffer(p, dtype).reshape(p.height, p.line_size // dtype.itemsize)[: p.height, : p.width]
              for p in frame.planes[: (3 if lay.kind == "rgb" else 1)]]
    scale = 1 << (lay.bit_depth - 8)
    if lay.kind == "rgb":
        return np.maximum.reduce(planes), 0, BLACK_MARGIN * scale
    black = 0 if video.full_range else 16 * scale
    return planes[0], black, BLACK_MARGIN * scale


def _sampled_frames(path: str, video: VideoInfo, samples: int):
    """Up to ``samples`` decoded frames spread over the stream (keyframe seeks), in time order."""
    container = open_input(path)
    try:
        stream = container.streams[video.index]
        stream.thread_type = "AUTO"
        tb = stream.time_base
        t0 = Fraction(video.start_time).limit_denominator(10**9)
        seen: set[int] = set()
        if video.duration and video.duration > 0:
            dur = Fraction(video.duration).limit_denominator(10**6)
            for i in range(samples):
                target = int((t0 + dur * Fraction(2 * i + 1, 2 * samples)) / tb)
                try:
                    container.seek(target, stream=stream, backward=True, any_frame=False)
                    frame = next(container.decode(stream), None)
                except (av.error.FFmpegError, StopIteration):
                    frame = None
                if frame is not None and frame.pts not in seen:
                    seen.add(frame.pts)
                    yield frame
            if seen:
                return
            container.seek(0, stream=stream, backward=True, any_frame=False)
        # no duration or no seeking: every 12th of the first frames
        for n, frame in enumerate(container.decode(stream)):
            if n % 12 == 0:
                yield frame
                if n // 12 + 1 >= samples:
                    break
    except av.error.FFmpegError as err:
        raise InputError(f"cannot decode {path} for --crop auto: {err.strerror or err}") from err
    finally:
        close_decoding(container, video.index)


def detect_crop(path: str, video: VideoInfo, samples: int = SAMPLES) -> CropRect | None:
    """The picture inside letterbox/pillarbox bars (see the module doc), or None when there are none."""
    bars = []
    for frame in _sampled_frames(path, video, samples):
        luma, black, thr = _luma(frame, video)
        found = frame_bars(luma, black, thr)
        if found is not None:
            bars.append(found)
    if not bars:
        log.info("--crop auto: every sampled frame is black; not cropping")
        return None
    top, bottom, left, right = (min(b[i] for b in bars) for i in range(4))
    if not (top or bottom or left or right):
        return None
    sx, sy = _subsampling(video)
    ax, ay = max(2, sx), max(2, sy)
    x = -(-left // sx) * sx  # inwards: offsets up, sizes down, to whole chroma samples / even sizes
    y = -(-top // sy) * sy
    w = (video.width - right - x) // ax * ax
    h = (video.height - bottom - y) // ay * ay
    if w < 2 or h < 2:
        return None
    rect = CropRect(w, h, x, y)
    log.info("--crop auto: picture %s of %d×%d (from %d sampled frames)", rect, video.width, video.height, len(bars))
    return rect
