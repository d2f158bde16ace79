"""Final mux: the encoded HEVC (with HDR10 container metadata) + the source's audio and
subtitles, stream-copied into MP4/MOV or Matroska, with its timecode and attachments.

Besides audio and subtitles, a source carries *data* streams (a MOV/MP4 ``tmcd`` timecode
track, GoPro telemetry, …) and *attachments* (Matroska fonts and cover images). The start
timecode (of a ``tmcd`` track, or a ``timecode`` tag) is carried over, shifted to the first
converted frame: as the output video stream's ``timecode`` metadata, from which FFmpeg's
mov/mp4 muxer writes a ``tmcd`` track and its Matroska muxer a ``TIMECODE`` tag. (A ``tmcd``
track stream-copied through PyAV's ``add_stream_from_template`` does not mux with FFmpeg 8.1,
"Invalid argument"; nor could a copied sample be shifted for ``--start``. Matroska has no
timecode track.) Attachments are copied into Matroska. Everything else is left out with one
warning line per stream.
"""

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
from .timecode import shift_timecode

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


def _meta(metadata: dict[str, str], key: str) -> str | None:
    """A metadata value by case-insensitive key (Matroska tags read back in upper case)."""
    for k, v in metadata.items():
        if k.lower() == key:
            return v
    return None


def _carry_extras(src, out, fmt: str, ovideo, vencoded, window: StreamWindow, result: MuxResult) -> None:
    """Timecode and attachments of ``src`` into ``out``; one warning per stream left out."""
    video = next((s for s in src.streams.video if not s.disposition & av.stream.Disposition.attached_pic), None)
    timecode = None
    for s in ([video] if video is not None else []) + [s for s in src.streams if s.type == "data"]:
        timecode = timecode or _meta(s.metadata, "timecode")
    timecode = timecode or _meta(src.metadata, "timecode")
    if timecode and video is not None and (video.average_rate or video.guessed_rate):
        rate = Fraction(video.average_rate or video.guessed_rate)
        v0 = Fraction(video.start_time * video.time_base) if video.start_time is not None else Fraction(0)
        out_rate = vencoded.average_rate or vencoded.guessed_rate or rate
        try:
            shifted = shift_timecode(timecode, rate, window.offset - v0, Fraction(out_rate))
        except ValueError as err:
            _skip(result, f"timecode {timecode!r} not carried over ({err})")
            shifted = None
        if shifted:
            ovideo.metadata["timecode"] = shifted
            result.copied.append(f"timecode {shifted}" + (" (tmcd track)" if fmt in ("mp4", "mov") else " (tag)"))
    for s in src.streams:
        if s.type == "video" and s.disposition & av.stream.Disposition.attached_pic:
            if fmt != "matroska":
                _skip(result, f"cover art (stream #{s.index} {s.codec_context.name}) cannot be stored in {fmt}; "
                              "skipped (use .mkv)")
                continue
            # FFmpeg shows a Matroska image attachment (and MP4 cover art) as a one-packet video
            # stream; written back as an attachment it is the same Matroska element again
            name = s.metadata.get("filename") or f"cover{_IMAGE_TYPES.get(s.codec_context.name, ('', ''))[1]}"
            mimetype = s.metadata.get("mimetype") or _IMAGE_TYPES.get(s.codec_context.name, ("image/jpeg", ""))[0]
            try:
                out.add_attachment(name, mimetype, _attached_picture(src.name, s.index))
            except (ValueError, av.error.FFmpegError, StopIteration) as err:
                _skip(result, f"cover art #{s.index} ({name}) could not be copied ({err}); skipped")
                continue
            result.copied.append(f"attachment #{s.index} {name}")
        elif s.type == "data":
            if _meta(s.metadata, "timecode") and timecode:
                continue  # carried as the output's timecode
            _skip(result, f"data stream #{s.index} ({getattr(s, 'name', None) or 'unknown'}) cannot be copied; skipped")
        elif s.type == "attachment":
            name = s.metadata.get("filename") or f"attachment{s.index}"
            mimetype = getattr(s, "mimetype", None) or s.metadata.get("mimetype") or "application/octet-stream"
            if fmt != "matroska":
                _skip(result, f"attachment #{s.index} ({name}) cannot be stored in {fmt}; skipped (use .mkv)")
                continue
            try:
                out.add_attachment(name, mimetype, s.data)
            except (ValueError, av.error.FFmpegError) as err:
                _skip(result, f"attachment #{s.index} ({name}) could not be copied ({err}); skipped")
                continue
            result.copied.append(f"attachment #{s.index} {name}")


_IMAGE_TYPES = {"mjpeg": ("image/jpeg", ".jpg"), "png": ("image/png", ".png"), "webp": ("image/webp", ".webp")}


def _attached_picture(path: str, index: int) -> bytes:
    """The picture of an attached-picture stream (its one packet), read from a separate open."""
    with open_input(path) as c:
        for packet in c.demux(c.streams[index]):
            if packet.size:
                return bytes(packet)
    raise StopIteration("no picture")


def _skip(result: MuxResult, msg: str) -> None:
    log.warning("%s", msg)
    result.skipped.append(msg)


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
    src = open_input(source_path)  # also for its timecode and attachments
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
            _carry_extras(src, out, fmt, ovideo, vstream, window, result)
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
