"""Final mux: the encoded HEVC (with HDR10 container metadata) + the source's audio and
subtitles — stream-copied, audio also transcoded to AAC where asked or needed — into MP4/MOV
(moov first, or fragmented CMAF-style) or Matroska, with its timecode and attachments.

Besides audio and subtitles, a source carries *data* streams (a MOV/MP4 ``tmcd`` timecode
track, GoPro telemetry, …) and *attachments* (Matroska fonts and cover images). The start
timecode (of a ``tmcd`` track, or a ``timecode`` tag) is carried over, shifted to the first
converted frame: as the output video stream's ``timecode`` metadata, from which FFmpeg's
mov/mp4 muxer writes a ``tmcd`` track and its Matroska muxer a ``TIMECODE`` tag. (A ``tmcd``
track stream-copied through PyAV's ``add_stream_from_template`` does not mux with FFmpeg 8.1,
"Invalid argument"; nor could a copied sample be shifted for ``--start``. Matroska has no
timecode track.) Attachments are copied into Matroska. Chapters (with their titles) and the
container's descriptive tags are carried, chapters cut and shifted to the converted span.
Everything else is left out with one warning line per stream.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator

import av

from ..errors import EncoderError, UsageError
from .audio import AacTranscoder
from .hdr10_boxes import MasteringMetadata, add_mp4_hdr10_boxes
from .hevc_sei import hvcc_with_hdr10_sei, nal_length_size, packet_with_data, with_hdr10_sei
from .probe import StreamInfo, is_chapter_track, open_input
from .subtitles import TextSubtitleTranscoder, text_subtitle_target
from .timecode import shift_timecode

__all__ = ["OUTPUT_FORMATS", "output_format", "mux_final", "StreamWindow", "MuxOptions", "parse_selection",
           "select_streams", "window_chapters", "STANDARD_AUDIO", "FRAGMENTED_MOVFLAGS"]

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


#: Audio codecs each container holds by a registered (standard) sample entry; in ``copy`` mode
#: any other codec is transcoded to AAC with a warning (e.g. Vorbis, which FFmpeg would write
#: into MP4 as the unregistered object type 0xDD). Matroska holds everything.
STANDARD_AUDIO: dict[str, frozenset[str] | None] = {
    "mp4": frozenset({"aac", "mp3", "mp2", "ac3", "eac3", "alac", "flac", "opus", "dts", "truehd"}),
    "mov": frozenset({"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be",
                      "pcm_s32le", "pcm_s32be", "pcm_f32le", "pcm_f32be", "pcm_f64le", "pcm_f64be"}),
    "matroska": None,
}
#: Fragmented MP4: a fragment at every video keyframe, an empty moov first (sample entries with
#: hvc1/colr/mdcv/clli, no samples) written once the first fragment is known (``delay_moov``) so
#: that its edit lists carry the B-frame delay and the AAC priming, ``tfhd`` offsets relative to
#: each moof (default-base-is-moof, as CMAF requires).
FRAGMENTED_MOVFLAGS = "frag_keyframe+empty_moov+delay_moov+default_base_moof"


def parse_selection(value: str | int | list | tuple | None) -> tuple[int | str, ...] | None:
    """``--audio-streams``/``--subtitle-streams``: None or ``"all"`` → None (every stream);
    ``"none"`` → (); ``"1,eng"`` or ``[1, "eng"]`` → (1, "eng"): stream indices (as ``hdrvideo
    probe`` numbers them) and ISO 639 language codes, in the order wanted."""
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    out: list[int | str] = []
    for item in items:
        text = str(item).strip().lower()
        if not text:
            continue
        if text == "all":
            return None
        if text == "none":
            continue
        if text.isdigit():
            out.append(int(text))
        elif text.isalpha() and 2 <= len(text) <= 3:
            out.append(text)
        else:
            raise UsageError(f"invalid stream selection {item!r}: use indices, language codes (eng), all or none")
    return tuple(out)


def select_streams(streams: tuple[StreamInfo, ...] | list[StreamInfo], kind: str,
                   selection: tuple[int | str, ...] | None) -> tuple[list[int], list[str]]:
    """Indices of the ``kind`` streams a selection picks (in its order), and warnings.

    An index that is not a ``kind`` stream is a usage error; a language no stream has is a warning.
    """
    of_kind = [s for s in streams if s.type == kind]
    if selection is None:
        return [s.index for s in of_kind], []
    picked: list[int] = []
    warnings: list[str] = []
    for item in selection:
        if isinstance(item, int):
            if item not in [s.index for s in of_kind]:
                have = ", ".join(str(s.index) for s in of_kind) or "none"
                raise UsageError(f"stream #{item} is not one of the input's {kind} streams ({have})")
            found = [item]
        else:
            found = [s.index for s in of_kind if (s.language or "").lower() == item
                     or (len(item) == 2 and (s.language or "").lower()[:2] == item)]
            if not found:
                warnings.append(f"no {kind} stream in language {item!r}")
        picked += [i for i in found if i not in picked]
    return picked, warnings


@dataclass(frozen=True)
class MuxOptions:
    """What the final mux keeps and how (``None`` stream lists = every stream of that kind)."""

    audio: str = "copy"  # copy | aac | none
    audio_bitrate: int = 0  # AAC bit/s; 0 = 64 kbit/s per channel
    audio_streams: tuple[int, ...] | None = None
    subtitle_streams: tuple[int, ...] | None = None
    fragmented: bool = False


@dataclass(frozen=True)
class StreamWindow:
    """The span of the source that was converted, in seconds on the source timeline."""

    offset: Fraction  # source time that becomes t = 0 in the output
    start: Fraction | None = None  # drop packets starting before this (a --start cut), None = keep all
    end: Fraction | None = None  # exclusive end on the source timeline, None = to the end


@dataclass
class MuxResult:
    copied: list[str] = field(default_factory=list)  # what went into the output (copied or transcoded)
    skipped: list[str] = field(default_factory=list)  # warnings: streams skipped, or transcoded unasked


def _packets(container, streams, mapping, shift: dict[int, int], window: StreamWindow | None,
             transcoders: dict[int, AacTranscoder] | None = None) -> Iterator:
    """Packets of ``streams`` with timestamps shifted; yields (time_seconds, seq, packet, out_stream).

    Streams in ``transcoders`` are decoded and re-encoded there (already on the output
    timeline); their AAC packets are yielded instead.
    """
    seq = 0
    transcoders = transcoders or {}

    def encoded(packets, tc):
        nonlocal seq
        for p in packets:
            seq += 1
            yield float((p.dts if p.dts is not None else p.pts) * p.time_base), seq, p, tc.stream

    for packet in container.demux(streams):
        index = packet.stream.index
        if index in transcoders:
            if not packet.size:
                continue  # the demuxer's end-of-stream packet: flushed below
            yield from encoded(transcoders[index].feed(packet), transcoders[index])
            continue
        if packet.dts is None and packet.pts is None:
            continue
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
    for tc in transcoders.values():
        yield from encoded(tc.feed(None), tc)


def _codec_name(s) -> str:
    return s.codec_context.name if s.codec_context is not None else "?"


def _meta(metadata: dict[str, str], key: str) -> str | None:
    """A metadata value by case-insensitive key (Matroska tags read back in upper case)."""
    for k, v in metadata.items():
        if k.lower() == key:
            return v
    return None


#: the frame rates timecodes count at (ST 12-1), NTSC ones included
_TIMECODE_RATES = {Fraction(r) for r in (24, 25, 30, 48, 50, 60)} | {Fraction(r * 1000, 1001) for r in (24, 30, 60)}


def _timecode_rate(video) -> Fraction:
    """The rate a stream's timecode counts at: the codec's declared frame rate when it is a
    timecode rate (an MPEG-2 sequence header says 29.97 for soft-pulldown film, whose frames
    average 23.976), else the stream's average rate."""
    declared = video.codec_context.framerate
    if declared and Fraction(declared) in _TIMECODE_RATES:
        return Fraction(declared)
    return Fraction(video.average_rate or video.guessed_rate)


def _carry_extras(src, out, fmt: str, ovideo, vencoded, window: StreamWindow, result: MuxResult) -> None:
    """Timecode and attachments of ``src`` into ``out``; one warning per stream left out."""
    video = next((s for s in src.streams.video if not s.disposition & av.stream.Disposition.attached_pic), None)
    timecode = None
    for s in ([video] if video is not None else []) + [s for s in src.streams if s.type == "data"]:
        timecode = timecode or _meta(s.metadata, "timecode")
    timecode = timecode or _meta(src.metadata, "timecode")
    if timecode and video is not None and (video.average_rate or video.guessed_rate):
        rate = _timecode_rate(video)
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
            if getattr(s, "name", None) == "dvd_nav_packet":
                continue  # a DVD's navigation packets (PCI/DSI) mean nothing outside its disc structure
            if is_chapter_track(src, s):
                continue  # its chapters are carried as chapters
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


#: container tags that describe the file's encoding or structure rather than its content: the
#: muxer writes its own (or they would be wrong after conversion); everything else is carried
_TECHNICAL_TAGS = frozenset({"major_brand", "minor_version", "compatible_brands", "encoder", "duration",
                             "timecode", "creation_time", "encoded_by"})


def _carry_tags(src, out) -> None:
    """The source container's descriptive tags (title, artist, comment, date, …) into ``out``;
    FFmpeg's own default (``-map_metadata 0``) less the technical ones."""
    for key, value in src.metadata.items():
        if key.lower() not in _TECHNICAL_TAGS and value:
            out.metadata[key] = value


def window_chapters(chapters: list[dict], window: StreamWindow) -> list[dict]:
    """Source chapters on the output timeline: shifted by ``window.offset``, cut to the
    converted span (a chapter running into a ``--start`` cut starts at 0), empty ones left out.
    Each keeps its ``time_base`` and metadata (the title); ids are renumbered from 1."""
    kept = []
    for ch in chapters:
        tb = Fraction(ch["time_base"])
        start, end = ch["start"] * tb, ch["end"] * tb
        if window.start is not None:
            start = max(start, window.start)
        if window.end is not None:
            end = min(end, window.end)
        start, end = max(start - window.offset, Fraction(0)), end - window.offset
        if end <= start:
            continue
        kept.append({"id": len(kept) + 1, "start": int(round(start / tb)), "end": int(round(end / tb)),
                     "time_base": tb, "metadata": dict(ch.get("metadata") or {})})
    return kept


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
    options: MuxOptions | None = None,
) -> MuxResult:
    """Write ``output_path`` from the encoded video and the source's audio/subtitle streams.

    The HDR10 boxes are first added to the intermediate (``video_path``); FFmpeg's demuxer
    exports them as stream side data and the muxer writes them into the output container's
    sample entry — the moov of a fragmented MP4 too. Copied source streams are shifted by
    ``window.offset`` and cut to the window at packet granularity; transcoded audio
    (:class:`~hdrvideo.media.audio.AacTranscoder`) is cut sample-exactly.
    """
    opts = options or MuxOptions()
    if not copy_audio:
        opts = dataclasses.replace(opts, audio="none")
    if not copy_subtitles:
        opts = dataclasses.replace(opts, subtitle_streams=())
    fmt, tag = output_format(output_path)
    if opts.fragmented and fmt not in ("mp4", "mov"):
        raise UsageError("--fragmented applies to MP4/MOV output")
    add_mp4_hdr10_boxes(video_path, meta)
    result = MuxResult()
    vin = av.open(video_path)
    want_audio = opts.audio != "none" and opts.audio_streams != ()
    want_subs = opts.subtitle_streams != ()
    src = open_input(source_path)  # also for its timecode and attachments
    if fmt not in ("mp4", "mov"):
        options = {}
    elif opts.fragmented:
        options = {"movflags": FRAGMENTED_MOVFLAGS}
    else:
        options = {"movflags": "+faststart"}
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
        transcoders: dict[int, AacTranscoder] = {}
        if src is not None:
            by_index = {s.index: s for s in src.streams}
            infos = [StreamInfo(s.index, s.type, _codec_name(s), s.metadata.get("language")) for s in src.streams]
            audio_ix = select_streams(infos, "audio", opts.audio_streams)[0] if want_audio else []
            sub_ix = select_streams(infos, "subtitle", opts.subtitle_streams)[0] if want_subs else []
            for index in audio_ix + sub_ix:
                s = by_index[index]
                o = None
                if s.type == "audio":
                    o = _audio_stream(s, out, fmt, opts, window, transcoders, result)
                    if o is None:
                        continue
                if o is None:
                    try:
                        o = out.add_stream_from_template(s)
                        result.copied.append(f"{s.type} #{s.index} {_codec_name(s)}")
                    except (ValueError, av.error.FFmpegError) as err:
                        o = _subtitle_transcoder(s, out, fmt, window, transcoders, result)
                        if o is None:
                            msg = f"{s.type} stream #{s.index} ({_codec_name(s)}) cannot be stored in {fmt}; skipped"
                            log.warning("%s (%s)", msg, err)
                            result.skipped.append(msg)
                            continue
                for key in ("language", "title", "handler_name"):
                    if key in s.metadata:
                        o.metadata[key] = s.metadata[key]
                o.disposition = s.disposition
                wanted.append(s)
                if s.index not in transcoders:
                    mapping[s.index] = o
            _carry_extras(src, out, fmt, ovideo, vstream, window, result)
            _carry_tags(src, out)
            chapters = window_chapters(src.chapters(), window)
            if chapters:
                out.set_chapters(chapters)
                result.copied.append(f"{len(chapters)} chapter{'s' if len(chapters) > 1 else ''}")
        vshift = {vstream.index: 0}
        vmap = {vstream.index: ovideo}
        iters = [_hdr10_sei(_packets(vin, [vstream], vmap, vshift, None), vstream, ovideo, meta)]
        if wanted:
            shift = {s.index: int(round(window.offset / s.time_base)) for s in wanted}
            iters.append(_packets(src, wanted, mapping, shift, window, transcoders))
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


def _hdr10_sei(packets: Iterator, vstream, ovideo, meta: MasteringMetadata) -> Iterator:
    """The video packets with the bitstream's HDR10 SEI set to ``meta`` (:mod:`.hevc_sei`): the
    measured MaxCLL/MaxFALL in place of the encoder's 0, 0, and both messages on every
    keyframe (hevc_nvenc writes none); the ``hvcC`` record's SEI too."""
    extradata = vstream.codec_context.extradata
    length_size = nal_length_size(extradata) if extradata else None
    if length_size is None:
        log.debug("video is not length-prefixed HEVC; its SEI is left as encoded")
        yield from packets
        return
    mdcv, cll = meta.mdcv_box()[8:], meta.clli_box()[8:]
    hvcc = hvcc_with_hdr10_sei(extradata, mdcv, cll)
    if hvcc != extradata:
        ovideo.codec_context.extradata = hvcc
    for item in packets:
        packet = item[2]
        if packet.size:
            data = bytes(packet)
            new = with_hdr10_sei(data, mdcv, cll, bool(packet.is_keyframe), length_size)
            if new is not data:
                item = (item[0], item[1], packet_with_data(packet, new), item[3])
        yield item


def _subtitle_transcoder(s, out, fmt: str, window: StreamWindow, transcoders: dict, result: MuxResult):
    """A text subtitle the container cannot store as it is, re-encoded to its text codec
    (:mod:`hdrvideo.media.subtitles`); None when it is not text or cannot be converted."""
    name = _codec_name(s)
    target = text_subtitle_target(name, fmt)
    if target is None:
        return None
    try:
        tc = TextSubtitleTranscoder(s, out, target, window.offset, window.start, window.end)
    except (ValueError, av.error.FFmpegError) as err:
        log.warning("subtitle stream #%d (%s) cannot be converted to %s: %s", s.index, name, target, err)
        return None
    transcoders[s.index] = tc
    result.copied.append(f"subtitle #{s.index} {name} → {target}")
    return tc.stream


def _audio_stream(s, out, fmt: str, opts: MuxOptions, window: StreamWindow, transcoders: dict[int, AacTranscoder],
                  result: MuxResult):
    """Copy (returns the output stream), transcode (registers a transcoder, returns its stream)
    or skip (None) one source audio stream."""
    name = _codec_name(s)
    allowed = STANDARD_AUDIO.get(fmt)
    reason = None
    if opts.audio == "aac":
        reason = ""
    elif allowed is not None and name not in allowed:
        reason = f"has no standard mapping in {fmt}"
    if reason is None:
        try:
            o = out.add_stream_from_template(s)
            result.copied.append(f"audio #{s.index} {name}")
            return o
        except (ValueError, av.error.FFmpegError) as err:
            reason = f"cannot be stored in {fmt} ({err})"
    if s.codec_context is None or not s.codec_context.sample_rate:
        msg = f"audio stream #{s.index} ({name}) cannot be decoded for AAC; skipped"
        log.warning("%s", msg)
        result.skipped.append(msg)
        return None
    try:
        tc = AacTranscoder(s, out, opts.audio_bitrate, window.offset, window.start, window.end)
    except (ValueError, av.error.FFmpegError) as err:
        msg = f"audio stream #{s.index} ({name}) cannot be transcoded to AAC ({err}); skipped"
        log.warning("%s", msg)
        result.skipped.append(msg)
        return None
    transcoders[s.index] = tc
    what = f"audio #{s.index} {name} → aac {tc.bitrate // 1000} kbit/s" + (" (downmixed to stereo)" if tc.downmixed else "")
    result.copied.append(what)
    if reason:
        msg = f"audio stream #{s.index} ({name}) {reason}; transcoded to AAC {tc.bitrate // 1000} kbit/s"
        log.warning("%s", msg)
        result.skipped.append(msg)
    return tc.stream
