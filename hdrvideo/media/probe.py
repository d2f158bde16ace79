"""Probe a media file with PyAV: streams, colour tags and their interpretation, HDR10 metadata."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from ..errors import InputError, UnsupportedInputError

__all__ = ["VideoInfo", "MediaInfo", "probe", "open_input"]

# FFmpeg AVColorPrimaries / AVColorTransferCharacteristic / AVColorSpace / AVColorRange
# (= ITU-T H.273 code points) → our names.
PRIMARIES_NAMES = {1: "bt709", 5: "bt601-625", 6: "bt601-525", 7: "bt601-525", 9: "bt2020", 12: "p3-d65"}
TRC_NAMES = {
    1: "bt709", 4: "gamma22", 5: "gamma28", 6: "bt601", 7: "smpte240m", 8: "linear",
    13: "srgb", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 18: "arib-std-b67",
}
MATRIX_NAMES = {0: "rgb", 1: "bt709", 5: "bt601", 6: "bt601", 9: "bt2020", 10: "bt2020c"}
HDR_TRANSFERS = {16: "PQ (SMPTE ST 2084)", 18: "HLG (ARIB STD-B67)"}


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


@dataclass(frozen=True)
class MediaInfo:
    path: str
    format: str
    duration: float | None
    video: VideoInfo | None
    streams: tuple[StreamInfo, ...]
    hdr10: dict[str, Any] = field(default_factory=dict)

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


def _reason(err: Exception) -> str:
    msg = getattr(err, "strerror", None) or str(err)
    return msg.split(": '")[0].strip()


def _bit_depth(pix_fmt: str) -> int:
    try:
        comps = av.VideoFormat(pix_fmt).components
        return max(c.bits for c in comps) if comps else 8
    except (ValueError, av.error.FFmpegError):
        return 8


def _video_info(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> VideoInfo:
    cc = stream.codec_context
    pix_fmt = cc.pix_fmt or (stream.format.name if stream.format else "yuv420p")
    width, height = cc.width, cc.height
    assumed: list[str] = []
    is_rgb = cc.colorspace == 0 and pix_fmt.startswith(("gbr", "rgb", "bgr", "argb", "abgr", "rgba", "bgra"))
    if not is_rgb:
        is_rgb = pix_fmt.startswith(("rgb", "bgr", "argb", "abgr", "gbr"))
    sd = height <= 576
    # matrix (untagged: BT.601 for SD, BT.709 for HD, as players do)
    matrix = MATRIX_NAMES.get(cc.colorspace)
    if matrix in (None, "rgb") and not is_rgb:
        matrix = "bt601" if sd else "bt709"
        assumed.append(f"matrix {matrix} (untagged)")
    if matrix == "bt2020c":
        raise UnsupportedInputError("BT.2020 constant-luminance input is not supported")
    # primaries (untagged: SMPTE C for 480-line, EBU for 576-line SD, else BT.709)
    primaries = PRIMARIES_NAMES.get(cc.color_primaries)
    if primaries is None:
        primaries = ("bt601-625" if height > 486 else "bt601-525") if sd else "bt709"
        if cc.color_primaries in (0, 2):
            assumed.append(f"primaries {primaries} (untagged)")
        else:
            assumed.append(f"primaries {primaries} (tag {cc.color_primaries} not supported)")
    # range (untagged: limited, except the JPEG yuvj formats)
    if cc.color_range == 2 or pix_fmt.startswith("yuvj"):
        full_range = True
    elif cc.color_range == 1:
        full_range = False
    else:
        full_range = is_rgb
        if not is_rgb:
            assumed.append("limited range (untagged)")
    siting = "center" if (stream.codec_context.name in ("mjpeg", "jpeg2000") or pix_fmt.startswith("yuvj")) else "left"
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    tb = stream.time_base or Fraction(1, 90000)
    duration = float(stream.duration * tb) if stream.duration else None
    if duration is None and container.duration:
        duration = container.duration / 1_000_000
    start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
    rotation = 0
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
    )


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Describe a media file: container, streams, the video's colour tags, HDR10 metadata."""
    with open_input(path) as container:
        video = None
        streams = []
        for s in container.streams:
            codec = s.codec_context.name if s.codec_context is not None else (s.codec_tag or "unknown")
            streams.append(StreamInfo(s.index, s.type, codec, s.metadata.get("language")))
            if s.type == "video" and video is None and not _is_cover_art(s):
                video = _video_info(container, s)
        fmt = container.format.name
        duration = container.duration / 1_000_000 if container.duration else None
    hdr10 = read_hdr10_metadata(path)
    return MediaInfo(str(path), fmt, duration, video, tuple(streams), hdr10)


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

