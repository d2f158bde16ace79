"""Probe a media file with PyAV: streams, colour tags and their interpretation, HDR10 metadata."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from ..errors import InputError, UnsupportedInputError, UsageError

__all__ = ["VideoInfo", "MediaInfo", "probe", "open_input", "close_decoding", "analyse_fields", "field_advice",
           "field_finding", "FIELD_ADVICE_MODES", "FieldStats", "TELECINE_RATES", "guess_matrix", "guess_primaries",
           "apply_colour_overrides", "colour_reading", "INPUT_MATRICES", "INPUT_PRIMARIES", "INPUT_RANGES"]

# FFmpeg AVColorPrimaries / AVColorTransferCharacteristic / AVColorSpace / AVColorRange
# (= ITU-T H.273 code points) → our names.
PRIMARIES_NAMES = {1: "bt709", 5: "bt601-625", 6: "bt601-525", 7: "bt601-525", 9: "bt2020", 12: "p3-d65"}
TRC_NAMES = {
    1: "bt709", 4: "gamma22", 5: "gamma28", 6: "bt601", 7: "smpte240m", 8: "linear",
    13: "srgb", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 18: "arib-std-b67",
}
MATRIX_NAMES = {0: "rgb", 1: "bt709", 5: "bt601", 6: "bt601", 9: "bt2020", 10: "bt2020c"}
HDR_TRANSFERS = {16: "PQ (SMPTE ST 2084)", 18: "HLG (ARIB STD-B67)"}
#: FFmpeg AVFieldOrder → our names (libavcodec/defs.h: TB = top coded first, bottom displayed first)
FIELD_ORDERS = {0: "unknown", 1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}
#: what --input-matrix/--input-primaries/--input-range accept
INPUT_MATRICES = ("bt709", "bt601", "bt2020")
INPUT_PRIMARIES = ("bt709", "bt601-525", "bt601-625", "bt2020")
INPUT_RANGES = ("limited", "full")
#: frame side data of CEA-608/708 closed captions (ATSC A/53 user data in the video bitstream)
A53_CAPTIONS = av.sidedata.sidedata.Type.A53_CC


@dataclass(frozen=True)
class VideoInfo:
    """The video stream of an input, with its colour tags and how hdrvideo interprets them."""

    index: int
    codec: str
    width: int
    height: int
    pix_fmt: str
    bit_depth: int
    time_base: Fraction
    rate: Fraction | None
    start_time: float
    duration: float | None  # seconds
    frames: int  # 0 = unknown
    rotation: int
    # raw tags (H.273 code points, 2 = unspecified)
    primaries_tag: int
    transfer_tag: int
    matrix_tag: int
    range_tag: int
    # interpretation
    matrix: str
    primaries: str
    full_range: bool
    chroma_siting: str
    is_rgb: bool
    assumed: tuple[str, ...] = ()
    #: where each interpretation came from: {"matrix"|"primaries"|"range": "tag"|"guess"|"override"}
    colour_source: dict[str, str] = field(default_factory=dict)
    field_order: str = "unknown"  # progressive, tt, bb, tb, bt (AVFieldOrder) or unknown
    interlaced_frames: bool = False  # the first decoded frame is flagged interlaced
    has_alpha: bool = False
    #: ``duration`` is the video stream's own (not the container's, which may be the audio's)
    duration_exact: bool = False
    #: width : height of one stored pixel (anamorphic SD, HDV); None = square or unknown
    sample_aspect: Fraction | None = None
    #: the first frame carries CEA-608/708 closed captions (ATSC A/53 side data)
    captions: bool = False
    #: soft 3:2 pulldown: film frames whose repeat-field flags show them as 29.97i; ``rate`` is
    #: then the film's (23.976), and the decoder puts the frames on that rate's even time grid
    pulldown: bool = False

    @property
    def display_aspect(self) -> Fraction:
        """Width : height of the picture as shown (storage aspect × pixel aspect)."""
        return Fraction(self.width, self.height) * (self.sample_aspect or 1)

    @property
    def interlaced(self) -> bool:
        """Interlaced by the stream's field order or by the flags of its first frame."""
        return self.interlaced_frames or self.field_order in ("tt", "bb", "tb", "bt")

    @property
    def top_field_first(self) -> bool | None:
        """Display order of the fields when the stream says it (None: per-frame flags or unknown)."""
        return {"tt": True, "bt": True, "bb": False, "tb": False}.get(self.field_order)

    @property
    def estimated_frames(self) -> int:
        if self.frames:
            return self.frames
        if self.duration and self.rate:
            return int(round(self.duration * float(self.rate)))
        return 0


@dataclass(frozen=True)
class StreamInfo:
    index: int
    type: str
    codec: str
    language: str | None = None
    detail: str | None = None  # timecode of a timecode track, file name of an attachment
    cover_art: bool = False


@dataclass(frozen=True)
class Chapter:
    start: float  # seconds on the container's timeline
    end: float
    title: str | None = None


@dataclass(frozen=True)
class MediaInfo:
    path: str
    format: str
    duration: float | None
    video: VideoInfo | None
    streams: tuple[StreamInfo, ...]
    hdr10: dict[str, Any] = field(default_factory=dict)
    chapters: tuple[Chapter, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.video is not None:
            v = d["video"]
            v["time_base"] = str(self.video.time_base)
            v["rate"] = str(self.video.rate) if self.video.rate else None
        return d


def open_input(path: str | os.PathLike[str]) -> av.container.InputContainer:
    """Open a media file, turning every failure into a one-line :class:`InputError`."""
    p = Path(path)
    if not p.exists():
        if re.search(r"%0?\d*d", p.name):
            raise InputError(f"input not found: {p} (image sequences are not read; give one video file)")
        raise InputError(f"input not found: {p}")
    if p.is_dir():
        raise InputError(f"input is a directory, not a video file: {p}")
    if p.stat().st_size == 0:
        raise InputError(f"input is empty (0 bytes): {p}")
    try:
        return av.open(str(p), metadata_errors="ignore")
    except av.error.FFmpegError as err:
        raise InputError(f"not a readable media file: {p} ({_reason(err)})") from err
    except OSError as err:
        raise InputError(f"cannot open {p}: {err.strerror or err}") from err


def close_decoding(container: av.container.InputContainer, index: int) -> None:
    """Drain stream ``index``'s decoder, then close ``container``.

    PyAV frees the codec context while holding the GIL, and a frame thread still busy (and
    logging through PyAV's callback) would then wait for the GIL forever; drained, none is.
    """
    try:
        for _ in container.streams[index].decode(None):
            pass
    except (av.error.FFmpegError, ValueError, IndexError):
        pass
    container.close()


def _reason(err: Exception) -> str:
    msg = getattr(err, "strerror", None) or str(err)
    return msg.split(": '")[0].strip()


def _bit_depth(pix_fmt: str) -> int:
    try:
        comps = av.VideoFormat(pix_fmt).components
        return max(c.bits for c in comps) if comps else 8
    except (ValueError, av.error.FFmpegError):
        return 8


def guess_matrix(width: int, height: int) -> str:
    """Y'CbCr matrix of untagged video, as mpv guesses it.

    mpv ``video/csputils.c`` ``mp_csp_guess_colorspace``: BT.709 when the width is at least
    1280 or the height above 576, else BT.601.
    """
    return "bt709" if width >= 1280 or height > 576 else "bt601"


def guess_primaries(width: int, height: int, matrix: str | None = None) -> str:
    """Primaries of video without a primaries tag, as mpv guesses them.

    mpv ``video/mp_image.c`` ``mp_image_params_guess_csp`` follows the (tagged or guessed)
    matrix first: BT.2020 → BT.2020, BT.709 → BT.709; for BT.601 it uses
    ``video/csputils.c`` ``mp_csp_guess_primaries``: BT.709 for HD (width ≥ 1280 or height
    > 576), SMPTE C (BT.601 525-line) for 480 or 486 lines, EBU (BT.601 625-line) for 576
    lines, and BT.709 for any other size.
    """
    if matrix in ("bt2020", "bt2020c"):
        return "bt2020"
    if matrix == "bt709":
        return "bt709"
    if width >= 1280 or height > 576:
        return "bt709"
    if height == 576:
        return "bt601-625"
    if height in (480, 486):
        return "bt601-525"
    return "bt709"


def apply_colour_overrides(video: VideoInfo, matrix: str | None = None, primaries: str | None = None,
                           range: str | None = None) -> VideoInfo:  # noqa: A002 - the option's name
    """``video`` with the user's ``--input-matrix/--input-primaries/--input-range`` applied.

    Overrides win over tags and guesses; each replaced value's note leaves ``assumed``.
    """
    if matrix is None and primaries is None and range is None:
        return video
    if video.is_rgb and (matrix is not None or range is not None):
        raise UsageError("--input-matrix/--input-range do not apply to RGB input")
    changes: dict[str, Any] = {}
    source = dict(video.colour_source)
    drop: list[str] = []
    if matrix is not None:
        if matrix not in INPUT_MATRICES:
            raise UsageError(f"invalid input matrix {matrix!r} (choose from {', '.join(INPUT_MATRICES)})")
        changes["matrix"] = matrix
        source["matrix"] = "override"
        drop.append("matrix ")
    if primaries is not None:
        if primaries not in INPUT_PRIMARIES:
            raise UsageError(f"invalid input primaries {primaries!r} (choose from {', '.join(INPUT_PRIMARIES)})")
        changes["primaries"] = primaries
        source["primaries"] = "override"
        drop.append("primaries ")
    if range is not None:
        if range not in INPUT_RANGES:
            raise UsageError(f"invalid input range {range!r} (choose from {', '.join(INPUT_RANGES)})")
        changes["full_range"] = range == "full"
        source["range"] = "override"
        drop.append("limited range")
        drop.append("full range")
    if matrix is not None and primaries is None and source.get("primaries") == "guess":
        # guessed primaries follow the matrix (mpv), so they follow an overridden one too
        changes["primaries"] = guess_primaries(video.width, video.height, matrix)
        drop.append("primaries ")
    assumed = tuple(a for a in video.assumed if not a.startswith(tuple(drop)))
    if "primaries" in changes and source.get("primaries") == "guess":
        assumed += (f"primaries {changes['primaries']} (untagged; follows --input-matrix {matrix})",)
    return dataclasses.replace(video, assumed=assumed, colour_source=source, **changes)


def colour_reading(video: VideoInfo) -> dict[str, str]:
    """How a conversion reads the input's colour, each value with where it came from.

    ``{"matrix": "bt601 (guessed)", "primaries": "bt709 (tagged)", "range": "full (override)",
    "chroma_siting": "left"}``.
    """
    words = {"tag": "tagged", "guess": "guessed", "override": "override"}
    values = {"matrix": "rgb" if video.is_rgb else video.matrix, "primaries": video.primaries,
              "range": "full" if video.full_range else "limited"}
    out = {k: f"{v} ({words[video.colour_source[k]]})" if k in video.colour_source and not (video.is_rgb and k != "primaries")
           else v for k, v in values.items()}
    out["chroma_siting"] = video.chroma_siting
    return out


def _first_frames(container: av.container.InputContainer, stream, count: int = 1) -> list[av.VideoFrame]:
    """The first ``count`` decodable frames of ``stream`` (for its rotation, field flags and
    frame timing), fewer if it ends first."""
    stream.thread_count = 1  # no frame threads: frames out without delay, nothing to drain
    frames: list[av.VideoFrame] = []
    try:
        for i, packet in enumerate(container.demux(stream)):
            if i > 64 + count:
                break
            try:
                frames += packet.decode()
            except av.error.FFmpegError:
                continue
            if len(frames) >= count:
                break
    except av.error.FFmpegError:
        pass
    return frames[:count]


#: frames whose timestamps are checked for soft pulldown
PULLDOWN_FRAMES = 24


#: codecs whose streams carry soft pulldown (MPEG-2 repeat_first_field, H.264 pic_struct)
PULLDOWN_CODECS = ("mpeg2video", "h264")
#: rates that are no pulldown's result: film itself, and the 25/50 Hz family
_NOT_PULLDOWN_RATES = (Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(50))


def _soft_pulldown(frames: list[av.VideoFrame]) -> Fraction | None:
    """The film rate of a stream with soft 3:2 pulldown, else None.

    MPEG-2 repeat_first_field flags (and H.264 pic_struct) show 23.976 progressive film frames
    for 3 and 2 fields in turn at 59.94 fields/s: decoded, each frame lasts 3 or 2 field
    periods. Every duration among the first frames must be 2 or 3 field periods (±1.2 ms:
    Matroska keeps milliseconds), both must occur, and they average 2.5: 4 film frames per 5
    video frames.
    """
    if len(frames) < PULLDOWN_FRAMES or any(f.interlaced_frame or f.pts is None or f.time_base is None
                                             for f in frames):
        return None
    times = sorted(float(f.pts * f.time_base) for f in frames)
    for field_rate in (Fraction(60000, 1001), Fraction(60)):
        fields = [(b - a) * float(field_rate) for a, b in zip(times, times[1:])]
        if (all(round(x) in (2, 3) and abs(x - round(x)) * 1000 / float(field_rate) <= 1.2 for x in fields)
                and {round(x) for x in fields} == {2, 3} and abs(sum(fields) / len(fields) - 2.5) <= 0.25):
            return field_rate * Fraction(2, 5)
    return None


def _video_info(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> VideoInfo:
    cc = stream.codec_context
    pix_fmt = cc.pix_fmt or (stream.format.name if stream.format else "yuv420p")
    width, height = cc.width, cc.height
    assumed: list[str] = []
    source: dict[str, str] = {}
    is_rgb = cc.colorspace == 0 and pix_fmt.startswith(("gbr", "rgb", "bgr", "argb", "abgr", "rgba", "bgra"))
    if not is_rgb:
        is_rgb = pix_fmt.startswith(("rgb", "bgr", "argb", "abgr", "gbr"))
    # matrix: untagged (or an unusable tag) is guessed as mpv does
    matrix = MATRIX_NAMES.get(cc.colorspace)
    source["matrix"] = "tag"
    if matrix in (None, "rgb") and not is_rgb:
        matrix = guess_matrix(width, height)
        source["matrix"] = "guess"
        assumed.append(f"matrix {matrix} (untagged, {width}×{height})")
    if matrix == "bt2020c":
        raise UnsupportedInputError("BT.2020 constant-luminance input is not supported")
    # primaries: untagged follow the matrix, then the frame size (mpv)
    primaries = PRIMARIES_NAMES.get(cc.color_primaries)
    source["primaries"] = "tag"
    if primaries is None:
        primaries = "bt709" if is_rgb else guess_primaries(width, height, matrix)
        source["primaries"] = "guess"
        if cc.color_primaries in (0, 2):
            assumed.append(f"primaries {primaries} (untagged)")
        else:
            assumed.append(f"primaries {primaries} (tag {cc.color_primaries} not supported)")
    # range (untagged: limited, except the JPEG yuvj formats)
    source["range"] = "tag"
    if cc.color_range == 2 or pix_fmt.startswith("yuvj"):
        full_range = True
    elif cc.color_range == 1:
        full_range = False
    else:
        full_range = is_rgb
        if not is_rgb:
            source["range"] = "guess"
            assumed.append("limited range (untagged)")
    siting = "center" if (stream.codec_context.name in ("mjpeg", "jpeg2000") or pix_fmt.startswith("yuvj")) else "left"
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    tb = stream.time_base or Fraction(1, 90000)
    duration = float(stream.duration * tb) if stream.duration else None
    if duration is None:
        duration = _tagged_duration(stream.metadata)
    duration_exact = duration is not None
    if duration is None and container.duration:
        duration = container.duration / 1_000_000
    start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
    sar = stream.sample_aspect_ratio  # the stream's, else the codec's (FFmpeg guesses the same way)
    sample_aspect = Fraction(sar) if sar and sar > 0 and sar != 1 else None
    # Rotation and field flags: PyAV does not expose the stream's side data, but libavcodec
    # attaches the stream's display matrix to every decoded frame, so the first frame says it.
    # soft pulldown is a DVD and HD-broadcast thing: no need to decode frames of larger pictures
    maybe_pulldown = cc.name in PULLDOWN_CODECS and rate not in _NOT_PULLDOWN_RATES and height <= 1088
    firsts = _first_frames(container, stream, PULLDOWN_FRAMES if maybe_pulldown else 1)
    first = firsts[0] if firsts else None
    film_rate = _soft_pulldown(firsts) if maybe_pulldown else None
    if film_rate is not None:
        rate = film_rate
    rotation = int(getattr(first, "rotation", 0) or 0) % 360 if first is not None else 0
    try:
        fmt = av.VideoFormat(pix_fmt)
        has_alpha = any(c.is_alpha for c in fmt.components)
    except (ValueError, av.error.FFmpegError):
        has_alpha = False
    return VideoInfo(
        index=stream.index,
        codec=cc.name,
        width=width,
        height=height,
        pix_fmt=pix_fmt,
        bit_depth=_bit_depth(pix_fmt),
        time_base=tb,
        rate=Fraction(rate) if rate else None,
        start_time=start,
        duration=duration,
        frames=stream.frames or 0,
        rotation=rotation,
        primaries_tag=cc.color_primaries,
        transfer_tag=cc.color_trc,
        matrix_tag=cc.colorspace,
        range_tag=cc.color_range,
        matrix=matrix or "bt709",
        primaries=primaries,
        full_range=full_range,
        chroma_siting=siting,
        is_rgb=is_rgb,
        assumed=tuple(assumed),
        colour_source=source,
        field_order=FIELD_ORDERS.get(getattr(cc, "field_order", 0), "unknown"),
        interlaced_frames=bool(first is not None and first.interlaced_frame),
        has_alpha=has_alpha,
        duration_exact=duration_exact,
        sample_aspect=sample_aspect,
        captions=first is not None and first.side_data.get(A53_CAPTIONS) is not None,
        pulldown=film_rate is not None,
    )


def _tagged_duration(metadata: dict[str, str]) -> float | None:
    """A Matroska stream's ``DURATION`` tag (``HH:MM:SS.nnnnnnnnn``, written by FFmpeg) in seconds."""
    text = metadata.get("DURATION") or metadata.get("duration")
    if not text:
        return None
    try:
        h, m, sec = text.split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        return None


def _stream_info(s) -> StreamInfo:
    """One stream's row; data and attachment streams have no codec context in PyAV."""
    cc = s.codec_context
    detail = None
    if cc is not None:
        codec = cc.name
    elif s.type == "attachment":
        codec = getattr(s, "mimetype", None) or "attachment"
        detail = s.metadata.get("filename")
    else:
        codec = getattr(s, "name", None) or ("tmcd" if "timecode" in s.metadata else "unknown")
    if "timecode" in s.metadata and s.type == "data":
        detail = s.metadata["timecode"]
    return StreamInfo(s.index, s.type, codec, s.metadata.get("language"), detail,
                      s.type == "video" and _is_cover_art(s))


#: idet's per-frame verdicts: a field repeating the previous frame's ("top"/"bottom"/"neither"),
#: and the frame's scan type judged with the frames around it ("progressive"/"tff"/"bff"/"undetermined")
_IDET_REPEAT = "lavfi.idet.repeated.current_frame"
_IDET_SCAN = "lavfi.idet.multiple.current_frame"
#: frame rates that carry telecined film (24 → 30 and 23.976 → 29.97 by 3:2 pulldown)
TELECINE_RATES = (Fraction(30000, 1001), Fraction(30))


@dataclass(frozen=True)
class FieldStats:
    """What the fields of frames sampled from a stream flagged interlaced say about it."""

    examined: int = 0  # frames judged (each against the one before it)
    repeated: int = 0  # frames with a field repeating the previous frame's (idet; 3:2 pulldown: 2 in 5)
    #: repeats on the two most frequent positions, modulo 5, of their run of frames: pulldown's
    #: repeats keep to its 5-frame cadence, stray ones (fades, noise) fall anywhere
    cadenced: int = 0
    moving: int = 0  # frames whose fields differ enough to judge how they pair (not still)
    aligned: int = 0  # moving frames whose own two fields are one instant: progressive (PsF)
    shifted: int = 0  # moving frames whose bottom field is one instant with a neighbour's top field
    #: (the rest of the moving frames pair with nothing: fields of their own instants, interlaced)

    #: verdicts need this many examined (and moving) frames
    MIN_FRAMES = 20
    MIN_MOVING = 10
    #: 3:2 pulldown repeats a field in 2 of 5 frames where things move (still and dark shots hide
    #: it: 0.15–0.2 over a real film's samples), camera video in none
    TELECINE_SHARE = 0.08
    TELECINE_MIN_REPEATS = 8
    CADENCE_SHARE = 0.9  # of the repeats, on the cadence's two positions (stray ones: about 0.6)
    PAIRED_SHARE = 0.9  # of the moving frames, pairing one way (aligned or shifted)

    def telecined(self, rate: Fraction | None) -> bool:
        return (rate in TELECINE_RATES and self.examined >= self.MIN_FRAMES
                and self.repeated >= max(self.TELECINE_MIN_REPEATS, self.TELECINE_SHARE * self.examined)
                and self.cadenced >= self.CADENCE_SHARE * self.repeated)

    @property
    def progressive_content(self) -> bool:
        """Whole progressive frames stored as interlaced (2:2 film, PsF)."""
        return self.moving >= self.MIN_MOVING and self.aligned >= self.PAIRED_SHARE * self.moving

    @property
    def shifted_content(self) -> bool:
        """Progressive frames stored a field out of step (each film frame is one frame's bottom
        field and the next one's top: 2:2 pulldown across frames, after an odd-field edit)."""
        return self.moving >= self.MIN_MOVING and self.shifted >= self.PAIRED_SHARE * self.moving


def _decoded_frames(container: av.container.InputContainer, stream, count: int):
    """Up to ``count`` frames decoded from the container's position on, skipping the packets
    the decoder rejects (after a seek, those before the next keyframe in some streams); gives
    up after ``4 × count + 64`` packets."""
    n = 0
    for i, packet in enumerate(container.demux(stream)):
        if i >= 4 * count + 64:
            return
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            continue
        for frame in frames:
            yield frame
            n += 1
            if n >= count:
                return


#: a moving frame: its fields differ by at least this mean (8-bit codes) one way of pairing
_MOTION_CODES = 2.0
#: one pairing is clean when its mismatch is below this share of the other's
_CLEAN_PAIRING = 0.6


def _luma8(frame: av.VideoFrame) -> np.ndarray:
    """Every fourth column of the frame's luma, as int16 in 8-bit code units (the fields are
    in the rows; the columns only need to sample the picture)."""
    plane = frame.planes[0]
    depth = _bit_depth(frame.format.name)
    dtype = np.uint16 if depth > 8 else np.uint8
    arr = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // dtype().itemsize)[:, : plane.width : 4]
    return (arr >> (depth - 8)).astype(np.int16) if depth > 8 else arr.astype(np.int16)


def _field_mismatch(top: np.ndarray, bottom: np.ndarray) -> float:
    """Mean difference (8-bit codes) between one frame's bottom-field lines and another's
    top-field lines interpolated to them: small when the two fields are one instant of one
    picture."""
    t, b = top[0::2], bottom[1::2]
    n = min(len(t) - 1, len(b))
    return float(np.abs(2 * b[:n] - t[:n] - t[1 : n + 1]).mean()) / 2


def _field_pairing(previous: np.ndarray, current: np.ndarray, counts: dict[str, int]) -> None:
    """How ``previous``'s fields pair: with each other (aligned), across to a neighbour's
    (shifted), or with nothing (interlaced); still frames are not counted."""
    own = _field_mismatch(previous, previous)
    across = min(_field_mismatch(current, previous), _field_mismatch(previous, current))
    if max(own, across) < _MOTION_CODES:
        return
    counts["moving"] += 1
    counts["aligned"] += own < _CLEAN_PAIRING * across
    counts["shifted"] += across < _CLEAN_PAIRING * own


def _idet_window(frames, time_base: Fraction, counts: dict[str, int]) -> None:
    """Add the verdicts on consecutive ``frames`` to ``counts``: FFmpeg's ``idet`` for repeated
    fields, :func:`_field_pairing` for how the fields pair (the first frame has no previous
    one to compare with, so it is not counted)."""
    graph = None
    first_pts = None
    previous = None
    phases = [0] * 5  # repeats by position in the run, modulo 5
    for frame in frames:
        if graph is None:
            graph = av.filter.Graph()
            src = graph.add("buffer", f"video_size={frame.width}x{frame.height}:pix_fmt={frame.format.name}:"
                                      f"time_base={time_base.numerator}/{time_base.denominator}:pixel_aspect=1/1")
            idet, sink = graph.add("idet"), graph.add("buffersink")
            src.link_to(idet)
            idet.link_to(sink)
            graph.configure()
            first_pts = frame.pts
        luma = _luma8(frame)
        if previous is not None and previous.shape == luma.shape:
            _field_pairing(previous, luma, counts)
        previous = luma
        graph.vpush(frame)
        while True:
            try:
                out = graph.vpull()
            except (av.error.BlockingIOError, av.error.EOFError):
                break
            md = out.metadata
            if md.get(_IDET_REPEAT) is None or out.pts == first_pts:
                continue
            counts["examined"] += 1
            if md[_IDET_REPEAT] != "neither":
                counts["repeated"] += 1
                phases[counts["examined"] % 5] += 1
    counts["cadenced"] += sum(sorted(phases)[-2:])


_FIELD_STATS: dict[tuple, FieldStats] = {}  # one idet run per file version (plan, notices, chunks)


def analyse_fields(path: str, video: VideoInfo, windows: int = 4, frames: int = 40) -> FieldStats:
    """:func:`_analyse_fields`, remembered for the same file (path, size and modification time)."""
    try:
        st = os.stat(path)
    except OSError:
        return _analyse_fields(path, video, windows, frames)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, video.index, video.duration, windows, frames)
    if key not in _FIELD_STATS:
        if len(_FIELD_STATS) >= 16:
            _FIELD_STATS.pop(next(iter(_FIELD_STATS)))
        _FIELD_STATS[key] = _analyse_fields(path, video, windows, frames)
    return _FIELD_STATS[key]


def _analyse_fields(path: str, video: VideoInfo, windows: int = 4, frames: int = 40) -> FieldStats:
    """Judge ``windows`` runs of ``frames`` consecutive frames (:class:`FieldStats`).

    FFmpeg's ``idet`` compares each field with the same field of the previous frame (a repeat:
    3:2 pulldown repeats one in 2 of every 5 frames; camera video never does). The pairing
    measure compares each frame's bottom field with the top field of the same frame and of its
    neighbours, interpolated to the same lines: fields of one instant of one picture match,
    fields of two instants do not where things move. The runs come from the middle of the
    stream: a film's first seconds are often black, where nothing can be told apart. A stream
    that cannot be decoded from there (no keyframe to resume at) is read from its start.
    """
    counts = dict.fromkeys(("examined", "repeated", "cadenced", "moving", "aligned", "shifted"), 0)
    container = open_input(path)
    try:
        stream = container.streams[video.index]
        t0 = Fraction(video.start_time).limit_denominator(10**9)
        dur = Fraction(video.duration).limit_denominator(10**6) if video.duration and video.duration > 0 else None
        for i in range(windows if dur else 0):
            try:
                container.seek(int((t0 + dur * Fraction(i + 1, windows + 1)) / stream.time_base), stream=stream,
                               backward=True, any_frame=False)
                _idet_window(_decoded_frames(container, stream, frames), stream.time_base, counts)
            except av.error.FFmpegError:
                break
    finally:
        close_decoding(container, video.index)
    if counts["examined"] < FieldStats.MIN_FRAMES:  # unseekable, short, or decodable only from the start
        counts = dict.fromkeys(counts, 0)
        container = open_input(path)
        try:
            stream = container.streams[video.index]
            _idet_window(_decoded_frames(container, stream, windows * frames), stream.time_base, counts)
        except av.error.FFmpegError:
            pass  # what was read so far still counts
        finally:
            close_decoding(container, video.index)
    return FieldStats(**counts)


#: the ``--deinterlace`` mode for each kind of film in interlaced clothes (:func:`field_advice`)
FIELD_ADVICE_MODES = {"telecined": "ivtc", "progressive": "off", "shifted": "fieldmatch"}


def field_finding(kind: str, stats: FieldStats) -> str:
    """What :func:`field_advice` found, in words, with its counts."""
    if kind == "telecined":
        return (f"looks telecined: {stats.repeated} of {stats.examined} sampled frames repeat a field, "
                "the 3:2 pulldown of film")
    if kind == "progressive":
        return (f"looks progressive although flagged interlaced: in {stats.aligned} of {stats.moving} sampled "
                "frames with motion both fields are one instant (film or PsF)")
    return (f"looks like progressive film a field out of step: in {stats.shifted} of {stats.moving} sampled "
            "frames with motion the bottom field is one instant with a neighbour's top field")


def field_advice(path: str, video: VideoInfo) -> tuple[str, FieldStats] | None:
    """``(kind, stats)`` for a stream flagged interlaced whose frames are film, else None:
    ``"telecined"`` (3:2 pulldown, at 29.97/30 frames/s), ``"progressive"`` (whole frames,
    PsF) or ``"shifted"`` (whole frames a field out of step, which ``--deinterlace fieldmatch``
    pairs again frame for frame). Nothing is decoded for a progressive stream."""
    if not video.interlaced:
        return None
    stats = analyse_fields(path, video)
    if stats.telecined(video.rate):
        return "telecined", stats
    if stats.progressive_content:
        return "progressive", stats
    if stats.shifted_content:
        return "shifted", stats
    return None


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Describe a media file: container, streams, the video's colour tags, HDR10 metadata."""
    with open_input(path) as container:
        video = None
        streams = []
        for s in container.streams:
            info = _stream_info(s)
            if is_chapter_track(container, s):
                info = dataclasses.replace(info, detail="chapter titles")
            streams.append(info)
            if s.type == "video" and video is None and not _is_cover_art(s):
                video = _video_info(container, s)
        fmt = container.format.name
        duration = container.duration / 1_000_000 if container.duration else None
        chapters = tuple(Chapter(float(c["start"] * c["time_base"]), float(c["end"] * c["time_base"]),
                                 (c.get("metadata") or {}).get("title")) for c in container.chapters())
    hdr10 = read_hdr10_metadata(path)
    return MediaInfo(str(path), fmt, duration, video, tuple(streams), hdr10, chapters)


def is_chapter_track(container, stream) -> bool:
    """Whether ``stream`` is a QuickTime/MP4 chapter text track (FFmpeg shows it as a
    ``bin_data`` data stream; its samples are the titles of the container's chapters)."""
    return (stream.type == "data" and getattr(stream, "name", None) == "bin_data"
            and container.format.name.startswith("mov") and bool(container.chapters()))


def _is_cover_art(stream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def require_sdr_video(info: MediaInfo) -> VideoInfo:
    """The video stream of an SDR input we can convert, else a one-line error."""
    v = info.video
    if v is None:
        kinds = sorted({s.type for s in info.streams})
        if kinds:
            raise UnsupportedInputError(f"no video stream in {info.path} (it has only {', '.join(kinds)})")
        raise UnsupportedInputError(f"no video stream in {info.path}")
    if v.transfer_tag in HDR_TRANSFERS:
        raise UnsupportedInputError(
            f"input is already HDR ({HDR_TRANSFERS[v.transfer_tag]} transfer); hdrvideo converts SDR to HDR10"
        )
    if v.width <= 0 or v.height <= 0:
        raise InputError(f"video stream has no valid size in {info.path}")
    if v.width % 2 or v.height % 2:
        raise UnsupportedInputError(
            f"odd frame size {v.width}×{v.height}: 4:2:0 HDR10 output needs even dimensions (crop or pad the source first)"
        )
    return v


# --------------------------------------------------------------------------------------
# HDR10 static metadata as the container carries it (read via FFmpeg's stream side data)
# --------------------------------------------------------------------------------------


def read_hdr10_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Mastering display and content light level of the first video stream, from the container.

    Returns ``{}`` when absent. Values: primaries as xy floats, luminances in cd/m²,
    ``max_cll``/``max_fall`` in cd/m². Read from the MP4 ``mdcv``/``clli`` boxes directly
    (PyAV does not expose stream side data); Matroska is read from its Colour element.
    """
    from .hdr10_boxes import read_mp4_hdr10, read_mkv_hdr10

    p = str(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return {}
    if head[4:8] == b"ftyp":
        return read_mp4_hdr10(p)
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return read_mkv_hdr10(p)
    return {}

