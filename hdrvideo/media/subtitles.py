"""Text subtitles re-encoded for a container that cannot store them as they are.

MP4/MOV hold text subtitles only as 3GPP Timed Text (``mov_text``, ISO/IEC 14496-17) and
Matroska has no ``mov_text``: copying SubRip/ASS/WebVTT into MP4, or an MP4's ``mov_text``
into MKV, fails. FFmpeg's text subtitle decoders all produce ASS events, which its
``mov_text`` and ``subrip`` encoders take, so one decode → encode per event converts between
them (what ``ffmpeg -c:s mov_text`` / ``-c:s srt`` does). Styling beyond what the target
holds is dropped; the text and its timing are kept. Bitmap subtitles (DVD, PGS) cannot become
text and stay skipped.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Iterator

import av

__all__ = ["TEXT_SUBTITLE_CODECS", "TextSubtitleTranscoder", "text_subtitle_target"]

#: FFmpeg decoders whose output is ASS text events
TEXT_SUBTITLE_CODECS = frozenset({"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text"})
#: the text subtitle codec each output format stores
_TARGET = {"mp4": "mov_text", "mov": "mov_text", "matroska": "subrip"}
_MS = Fraction(1, 1000)


def text_subtitle_target(codec: str, fmt: str) -> str | None:
    """The codec a ``codec`` text subtitle becomes in ``fmt`` (None: not text, or no text codec)."""
    return _TARGET.get(fmt) if codec in TEXT_SUBTITLE_CODECS else None


class TextSubtitleTranscoder:
    """One source text subtitle stream → a ``target`` stream of ``container``.

    Same interface as :class:`~hdrvideo.media.audio.AacTranscoder`: ``stream`` is the output
    stream, ``feed(packet)`` returns its packets on the output timeline (``offset`` = the source
    time of t = 0) and ``feed(None)`` flushes. Events that end before ``start`` or begin at or
    after ``end`` (source seconds) are dropped; one that straddles ``start`` is shortened to begin
    at it.
    """

    def __init__(self, in_stream, container: av.container.OutputContainer, target: str, offset: Fraction,
                 start: Fraction | None = None, end: Fraction | None = None) -> None:
        self.in_stream = in_stream
        self.decoder = in_stream.codec_context
        self.decoder.open()  # text decoders make their ASS header (the encoders' input) here
        self.stream = container.add_stream(target)
        cc = self.stream.codec_context
        cc.subtitle_header = self.decoder.subtitle_header
        cc.time_base = _MS
        self.stream.time_base = _MS
        cc.open()
        self.offset = Fraction(offset)
        self.lo = max(self.offset, Fraction(start)) if start is not None else self.offset
        self.hi = Fraction(end) if end is not None else None

    def feed(self, packet: av.Packet | None) -> Iterator[av.Packet]:
        if packet is None or packet.pts is None or not packet.size:
            return iter(())
        tb = Fraction(packet.time_base or self.in_stream.time_base)
        t0 = packet.pts * tb
        t1 = t0 + (packet.duration or 0) * tb
        if (packet.duration and t1 <= self.lo) or (not packet.duration and t0 < self.lo):
            return iter(())
        if self.hi is not None and t0 >= self.hi:
            return iter(())
        t0 = max(t0, self.lo)
        if self.hi is not None and packet.duration:
            t1 = min(t1, self.hi)
        subtitle = self.decoder.decode2(packet)
        if subtitle is None or not len(subtitle):
            return iter(())
        out = self.stream.codec_context.encode_subtitle(subtitle)
        out.pts = out.dts = round((t0 - self.offset) / _MS)
        out.duration = max(0, round((t1 - t0) / _MS)) if packet.duration else 0
        out.time_base = _MS
        out.stream = self.stream
        return iter((out,))
