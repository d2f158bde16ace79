"""Lossless cache of packed 10-bit 4:2:0 planes between the two passes of a two-pass encode.

The first pass writes the encoder's input planes with FFV1 (lossless, intra-only, sliced for
threads) into a NUT file in the conversion's temporary directory; the second pass reads them
back bit-exactly instead of decoding and running the device chain again. Worth it when the
chain is expensive (a network): FFV1 costs a few milliseconds per HD frame and stores about
40–60 % of the raw planes (raw 4K 10-bit 4:2:0 is 24.9 MB per frame), so the disk needed grows
with the length of the encode; ``--chunks`` bounds it per worker.
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Iterator

import av
import numpy as np

from ..errors import EncoderError
from .decode import DecodeStats

__all__ = ["PlaneCacheWriter", "PlaneCacheReader"]

PIX_FMT = "yuv420p10le"


def _plane_view(plane) -> np.ndarray:
    return np.frombuffer(plane, np.uint16).reshape(plane.height, plane.line_size // 2)


class PlaneCacheWriter:
    """Appends :class:`~hdrvideo.stages.PackedBatch` planes and timestamps to an FFV1 NUT file."""

    def __init__(self, path: str, size: tuple[int, int], time_base: Fraction, rate: Fraction | None) -> None:
        self.path = path
        self.width, self.height = size
        self.time_base = Fraction(time_base)
        try:
            self.container = av.open(path, "w", format="nut")
            s = self.container.add_stream("ffv1", rate=rate or Fraction(25))
            s.width, s.height, s.pix_fmt = self.width, self.height, PIX_FMT
            s.time_base = self.time_base
            s.codec_context.time_base = self.time_base
            s.options = {"level": "3", "slices": "4", "slicecrc": "0", "g": "1"}
            s.codec_context.thread_type = "SLICE"
            self.stream = s
        except av.error.FFmpegError as err:
            raise EncoderError(f"cannot write the two-pass plane cache {path}: {err.strerror or err}") from err

    def write(self, packed) -> None:
        try:
            for i, pts in enumerate(packed.pts):
                frame = av.VideoFrame(self.width, self.height, PIX_FMT)
                for plane, src in zip(frame.planes, (packed.y[i], packed.cb[i], packed.cr[i])):
                    _plane_view(plane)[:, : src.shape[1]] = src
                frame.pts = pts
                frame.time_base = self.time_base
                for p in self.stream.encode(frame):
                    self.container.mux(p)
        except (av.error.FFmpegError, OSError) as err:
            raise EncoderError(f"writing the two-pass plane cache failed: {getattr(err, 'strerror', None) or err}") from err

    def close(self) -> None:
        try:
            for p in self.stream.encode(None):
                self.container.mux(p)
            self.container.close()
        except (av.error.FFmpegError, OSError) as err:
            raise EncoderError(f"writing the two-pass plane cache failed: {getattr(err, 'strerror', None) or err}") from err

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - best effort on an error path
            pass
        try:
            os.remove(self.path)
        except OSError:
            pass


class PlaneCacheReader:
    """Iterates the cached planes as :class:`~hdrvideo.stages.PackedBatch` es of ``batch`` frames.

    Timestamps come back in the source time base exactly (NUT may store them in a finer one).
    Light levels are not stored (the first pass measured them). ``stats``/``stop`` mirror the
    :class:`~hdrvideo.media.decode.Decoder` the pipeline expects of a source.
    """

    def __init__(self, path: str, time_base: Fraction, batch: int, stats: DecodeStats | None = None) -> None:
        self.path = path
        self.time_base = Fraction(time_base)
        self.batch = max(1, int(batch))
        self.stats = stats or DecodeStats()
        self.stop = False

    def __iter__(self) -> Iterator:
        from ..stages import PackedBatch

        with av.open(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "SLICE"
            scale = Fraction(stream.time_base) / self.time_base
            planes: list[list[np.ndarray]] = [[], [], []]
            pts: list[int] = []

            def batch():
                n = len(pts)
                return PackedBatch(*(np.stack(p) for p in planes), list(pts), np.zeros(n), np.zeros(n))

            for frame in container.decode(stream):
                if self.stop:
                    return
                for k, plane in enumerate(frame.planes[:3]):
                    planes[k].append(_plane_view(plane)[:, : plane.width].copy())
                t = frame.pts * scale
                if t.denominator != 1:
                    raise EncoderError("the two-pass plane cache changed a timestamp")
                pts.append(int(t))
                if len(pts) == self.batch:
                    yield batch()
                    planes, pts = [[], [], []], []
            if pts:
                yield batch()
