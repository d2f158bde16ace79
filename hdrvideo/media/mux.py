"""Final mux: the encoded HEVC (with HDR10 container metadata) + the source's audio and
subtitles, stream-copied into MP4/MOV or Matroska."""

from __future__ import annotations

import heapq
import logging
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator

import av

from ..errors import EncoderError, UsageError
from .hdr10_boxes import MasteringMetadata, add_mp4_hdr10_boxes
from .probe import open_input

__all__ = ["OUTPUT_FORMATS", "output_format", "mux_final", "StreamWindow"]

log = logging.getLogger(__name__)

#: file extension → (FFmpeg muxer, HEVC codec tag or None)
OUTPUT_FORMATS = {
    ".mp4": ("mp4", "hvc1"),
    ".m4v": ("mp4", "hvc1"),
    ".mov": ("mov", "hvc1"),
    ".mkv": ("matroska", None),
}


def output_format(path: str) -> tuple[str, str | None]:
    ext = os.path.splitext(path)[1].lower()
    try:
        return OUTPUT_FORMATS[ext]
    except KeyError:
        raise UsageError(
            f"unsupported output extension {ext or '(none)'!r}: use one of {', '.join(OUTPUT_FORMATS)}"
        ) from None


@dataclass(frozen=True)
class StreamWindow:
    """The span of the source that was converted, in seconds on the source timeline."""

    offset: Fraction  # source time that becomes t = 0 in the output
    start: Fraction | None = None  # drop packets starting before this (a --start cut), None = keep all
    end: Fraction | None = None  # exclusive end on the source timeline, None = to the end


@dataclass
class MuxResult:
    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _packets(container, streams, mapping, shift: dict[int, int], window: StreamWindow | None) -> Iterator:
    """Packets of ``streams`` with timestamps shifted; yields (time_seconds, seq, packet, out_stream)."""
    seq = 0
    for packet in container.demux(streams):
        if packet.dts is None and packet.pts is None:
            continue
        index = packet.stream.index
        tb = packet.stream.time_base
        ts = packet.pts if packet.pts is not None else packet.dts
        if window is not None:
            t = ts * tb
            if window.start is not None and t < window.start:
                continue  # starts before the cut (at most one audio frame is lost)
            if window.end is not None and t >= window.end:
                continue
        off = shift[index]
        if packet.pts is not None:
            packet.pts -= off
        if packet.dts is not None:
            packet.dts -= off
        out = mapping[index]
        seq += 1
        yield float((packet.dts if packet.dts is not None else packet.pts) * tb), seq, packet, out


def mux_final(
    video_path: str,
    source_path: str,
    output_path: str,
    meta: MasteringMetadata,
    window: StreamWindow,
    copy_audio: bool = True,
    copy_subtitles: bool = True,
) -> MuxResult:
    """Write ``output_path`` from the encoded video and the source's audio/subtitle streams.

    The HDR10 boxes are first added to the intermediate (``video_path``); FFmpeg's demuxer
    exports them as stream side data and the muxer writes them into the output container.
    Source streams are shifted by ``window.offset`` and cut to the window at packet granularity.
    """
    fmt, tag = output_format(output_path)
    add_mp4_hdr10_boxes(video_path, meta)
    result = MuxResult()
    vin = av.open(video_path)
    src = open_input(source_path) if (copy_audio or copy_subtitles) else None
    options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
    try:
        out = av.open(output_path, "w", format=fmt, options=options)
    except av.error.FFmpegError as err:
        vin.close()
        if src:
            src.close()
        raise EncoderError(f"cannot write {output_path}: {err.strerror or err}") from err
    try:
        vstream = vin.streams.video[0]
        ovideo = out.add_stream_from_template(vstream)
        if tag:
            ovideo.codec_tag = tag
        wanted = []
        mapping = {}
        if src is not None:
            for s in src.streams:
                if s.type == "audio" and copy_audio or s.type == "subtitle" and copy_subtitles:
                    try:
                        o = out.add_stream_from_template(s)
                    except (ValueError, av.error.FFmpegError) as err:
                        msg = f"{s.type} stream #{s.index} ({s.codec_context.name if s.codec_context else '?'}) cannot be stored in {fmt}; skipped"
                        log.warning("%s (%s)", msg, err)
                        result.skipped.append(msg)
                        continue
                    for key in ("language", "title", "handler_name"):
                        if key in s.metadata:
                            o.metadata[key] = s.metadata[key]
                    o.disposition = s.disposition
                    wanted.append(s)
                    mapping[s.index] = o
                    result.copied.append(f"{s.type} #{s.index} {s.codec_context.name if s.codec_context else ''}".strip())
            if "title" in src.metadata:
                out.metadata["title"] = src.metadata["title"]
        vshift = {vstream.index: 0}
        vmap = {vstream.index: ovideo}
        iters = [_packets(vin, [vstream], vmap, vshift, None)]
        if wanted:
            shift = {s.index: int(round(window.offset / s.time_base)) for s in wanted}
            iters.append(_packets(src, wanted, mapping, shift, window))
        for _t, _seq, packet, ostream in heapq.merge(*iters, key=lambda item: (item[0], item[1])):
            packet.stream = ostream
            out.mux(packet)
        out.close()
    except av.error.FFmpegError as err:
        raise EncoderError(f"muxing {output_path} failed: {err.strerror or err}") from err
    finally:
        vin.close()
        if src:
            src.close()
    return result
