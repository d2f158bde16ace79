"""Audio transcoding to AAC for the final mux (``--audio aac``, or a codec the container cannot hold).

One source stream is decoded, cut to the converted span **sample-exactly**, kept continuous,
resampled where AAC needs it (:class:`av.AudioResampler`: planar float, a rate and channel
layout FFmpeg's native AAC encoder takes) and encoded with PyAV's AAC encoder.

Timing: the output timeline starts at the first video frame (``StreamWindow.offset``). Each
decoded frame's position comes from its timestamp; samples before the window (or before the
first video frame) and after its end are dropped, so the audio starts together with the video.
Gaps or overlaps larger than :data:`RESYNC_SECONDS` between consecutive frames are filled with
silence or dropped; smaller timestamp jitter (e.g. Matroska's millisecond rounding) is ignored,
so the sample count — not rounded timestamps — carries the timeline. The AAC encoder's
priming (1024 samples, FFmpeg's ``initial_padding``) is signalled by negative timestamps on the
first packet, which the MP4/MOV muxer turns into an edit list and Matroska into a codec delay.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction

import av
import numpy as np

__all__ = ["AacTranscoder", "AAC_RATES", "default_audio_bitrate", "RESYNC_SECONDS"]

log = logging.getLogger(__name__)

AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
RESYNC_SECONDS = 0.04


def default_audio_bitrate(channels: int) -> int:
    """64 kbit/s per channel (128 kbit/s stereo, 384 kbit/s 5.1)."""
    return 64_000 * max(1, channels)


def _aac_layout(layout: av.AudioLayout, rate: int) -> str:
    """The source layout if FFmpeg's AAC encoder takes it, else stereo (mono stays mono)."""
    name = layout.name
    if layout.nb_channels <= 2:
        return "mono" if layout.nb_channels == 1 else "stereo"
    try:
        ctx = av.CodecContext.create("aac", "w")
        ctx.sample_rate, ctx.layout, ctx.format = rate, name, "fltp"
        ctx.time_base = Fraction(1, rate)
        ctx.open()
        return name
    except (av.error.FFmpegError, ValueError):
        return "stereo"


class AacTranscoder:
    """Transcodes one source audio stream into an AAC stream of ``container`` (see the module doc).

    ``start``/``end`` bound the kept span on the source timeline (seconds, None = open);
    ``offset`` is the source time that becomes t = 0 in the output.
    """

    def __init__(self, in_stream: av.audio.stream.AudioStream, container: av.container.OutputContainer,
                 bitrate: int, offset: Fraction, start: Fraction | None = None, end: Fraction | None = None) -> None:
        cc = in_stream.codec_context
        self.in_stream = in_stream
        src_rate = cc.sample_rate or 48000
        self.rate = src_rate if src_rate in AAC_RATES else 48000
        self.layout = _aac_layout(cc.layout, self.rate)
        self.downmixed = cc.layout.nb_channels > 2 and self.layout == "stereo"
        channels = av.AudioLayout(self.layout).nb_channels
        self.bitrate = bitrate or default_audio_bitrate(channels)
        s = container.add_stream("aac", rate=self.rate, layout=self.layout)
        s.bit_rate = self.bitrate
        s.time_base = Fraction(1, self.rate)
        s.codec_context.time_base = Fraction(1, self.rate)
        self.stream = s
        self.offset = Fraction(offset)
        self.lo = max(self.offset, Fraction(start)) if start is not None else self.offset
        self.hi = Fraction(end) if end is not None else None
        self.resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        self._expected: int | None = None  # next source sample index (source rate, output timeline)
        self._first = 0  # source sample index of the first kept sample
        self._out_next: int | None = None  # next output sample index (output rate)
        self.decode_errors = 0

    # -- samples ---------------------------------------------------------------------------
    @staticmethod
    def _slice(frame: av.AudioFrame, a: int, b: int) -> av.AudioFrame:
        if a == 0 and b == frame.samples:
            return frame
        arr = frame.to_ndarray()
        ch = frame.layout.nb_channels
        arr = arr[:, a:b] if frame.format.is_planar else arr[:, a * ch : b * ch]
        out = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=frame.format.name, layout=frame.layout.name)
        out.sample_rate = frame.sample_rate
        return out

    @staticmethod
    def _silence(like: av.AudioFrame, samples: int) -> av.AudioFrame:
        ch = like.layout.nb_channels
        dtype = like.to_ndarray().dtype
        shape = (ch, samples) if like.format.is_planar else (1, samples * ch)
        fill = 128 if like.format.name.startswith("u8") else 0
        out = av.AudioFrame.from_ndarray(np.full(shape, fill, dtype), format=like.format.name, layout=like.layout.name)
        out.sample_rate = like.sample_rate
        return out

    def _trimmed(self, frame: av.AudioFrame) -> list[av.AudioFrame]:
        """The part of a decoded frame inside the window, made continuous with what came before."""
        sr = frame.sample_rate
        n = frame.samples
        if n == 0:
            return []
        if frame.pts is None or frame.time_base is None:
            if self._expected is None:
                return []
            pos = self._expected  # no timestamp: continue where the last frame ended
            t = self.offset + Fraction(pos, sr)
        else:
            t = frame.pts * Fraction(frame.time_base)
            pos = None
        a, b = 0, n
        if t < self.lo:
            a = min(n, math.ceil((self.lo - t) * sr))
        if self.hi is not None:
            b = max(a, min(n, math.ceil((self.hi - t) * sr)))
        if a >= b:
            return []
        if pos is None:
            pos = round((t - self.offset) * sr) + a
        else:
            pos += a
        out: list[av.AudioFrame] = []
        if self._expected is None:
            self._expected = self._first = pos
        gap = pos - self._expected
        tolerance = int(RESYNC_SECONDS * sr)
        if gap > tolerance:
            log.warning("audio stream #%d: %.3f s gap filled with silence", self.in_stream.index, gap / sr)
            out.append(self._silence(frame, gap))
        elif gap < -tolerance:
            a = min(b, a - gap)  # overlap: drop what was already played
            if a >= b:
                return []
        piece = self._slice(frame, a, b)
        out.append(piece)
        self._expected += sum(f.samples for f in out)
        return out

    def _encode(self, frames: list[av.AudioFrame]) -> list[av.Packet]:
        packets: list[av.Packet] = []
        for f in frames:
            f.pts = self._out_next
            f.time_base = Fraction(1, self.rate)
            self._out_next += f.samples
            packets += self.stream.encode(f)
        return packets

    def feed(self, packet: av.Packet | None) -> list[av.Packet]:
        """Decode a source packet (None flushes everything) and return the AAC packets made."""
        try:
            decoded = packet.decode() if packet is not None else self.in_stream.codec_context.decode(None)
        except av.error.FFmpegError as err:
            self.decode_errors += 1
            if self.decode_errors == 1:
                log.warning("audio stream #%d: undecodable packet skipped (%s)", self.in_stream.index, err)
            decoded = []
        packets: list[av.Packet] = []
        for frame in decoded:
            for piece in self._trimmed(frame):
                if self._out_next is None:  # the first kept sample's place on the output timeline
                    self._out_next = round(Fraction(self._first * self.rate, piece.sample_rate))
                packets += self._encode(self.resampler.resample(piece))
        if packet is None:
            if self._out_next is not None:
                packets += self._encode(self.resampler.resample(None))
                packets += self.stream.encode(None)
        return packets
