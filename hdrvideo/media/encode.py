"""Encode stage: packed 10-bit 4:2:0 planes → HEVC Main10 with HDR10 signalling (PyAV).

The encoder writes a video-only intermediate MP4; :mod:`hdrvideo.media.mux` later adds the
measured HDR10 container metadata and the source's audio/subtitles.

Signalling (ITU-T H.273 code points): colour primaries 9 (BT.2020), transfer 16 (SMPTE ST
2084), matrix 9 (BT.2020 non-constant luminance), limited range. With libx265 the VUI and the
SEI messages (mastering display colour volume, H.265 D.2.28; content light level, D.2.35) are
written by x265 itself. MaxCLL/MaxFALL are measured during encoding, so the bitstream SEI
carries 0,0 ("unknown", allowed by CTA-861.3) and the container carries the measured values.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import logging
import math
import os
import re
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from ..errors import EncoderError, UsageError
from .captions import a53_sei_nal, with_sei
from .hdr10_boxes import MasteringMetadata

__all__ = ["EncoderConfig", "HevcEncoder", "encoder_available", "check_encoder", "ENCODERS", "x265_params",
           "nvenc_options", "encoder_options", "encoder_frame", "parse_rate", "parse_keyint", "parse_x265_params", "check_x265_params"]

log = logging.getLogger(__name__)

#: encoder name → the host pixel layout it takes
ENCODERS = {"libx265": "yuv420p10le", "hevc_nvenc": "p010le"}
VBV_INIT = 0.9  # x265's default initial VBV buffer fullness
_CHROMALOC = {"left": 0, "center": 1, "topleft": 2, "top": 3, "bottomleft": 4, "bottom": 5}


def encoder_available(name: str) -> bool:
    """True if PyAV's FFmpeg has this encoder (hevc_nvenc also needs an NVIDIA driver at run time)."""
    try:
        av.codec.Codec(name, "w")
        return True
    except (av.error.FFmpegError, ValueError):
        return False


def check_encoder(encoder: "str | EncoderConfig", width: int = 256, height: int = 256, crf: float = 18.0,
                  time_base: Fraction = Fraction(1, 25)) -> None:
    """Open the encoder once, so a missing GPU/driver or an unsupported setting fails before any work.

    ``encoder`` is the conversion's :class:`EncoderConfig` (or an encoder name and a picture size).
    NVENC is opened with exactly the options and picture size the conversion will use
    (:func:`encoder_options`): FFmpeg's ``nvenc_check_capabilities`` refuses B-frames, B-frame
    references, 10-bit or a size the GPU cannot do only when the encoder is opened, so a check with
    other settings would pass and the real encoder fail at the first frame.
    """
    cfg = encoder if isinstance(encoder, EncoderConfig) else EncoderConfig(
        width=width, height=height, time_base=time_base, rate=None, encoder=encoder, crf=crf)
    name = cfg.encoder
    if name not in ENCODERS:
        raise UsageError(f"unknown encoder {name!r} (choose from {', '.join(ENCODERS)})")
    if not encoder_available(name):
        raise EncoderError(f"encoder {name} is not available in this FFmpeg build")
    if name == "libx265":
        return
    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt = cfg.width, cfg.height, ENCODERS[name]
        ctx.time_base = cfg.time_base
        ctx.options = encoder_options(cfg)
        ctx.open()
    except av.error.FFmpegError as err:
        raise EncoderError(
            f"{name} cannot be opened ({err.strerror or err}): it needs an NVIDIA GPU with NVENC and its driver, "
            "and HEVC Main10 with these settings at this size"
        ) from err


@dataclass(frozen=True)
class EncoderConfig:
    width: int
    height: int
    time_base: Fraction
    rate: Fraction | None
    encoder: str = "libx265"
    crf: float = 18.0
    x265_preset: str = "medium"
    chroma_siting: str = "left"
    mastering: MasteringMetadata = MasteringMetadata()
    rotation: int = 0
    threads: int = 0  # 0 = encoder default
    extra_params: str = ""  # appended to x265-params (the user's --x265-params, checked by check_x265_params)
    keyint: int = 0  # frames between keyframes, exactly (0 = encoder default, scene-cut driven)
    closed_gop: bool = False
    bitrate: int = 0  # bit/s, average (ABR); 0 = constant quality (crf)
    maxrate: int = 0  # bit/s, VBV (HRD) peak rate; with bufsize
    bufsize: int = 0  # bits, VBV buffer
    rc_pass: int = 0  # libx265: 0 = one pass; 1 or 2 = that pass of a two-pass encode (stats in ``stats``)
    stats: str = ""
    multipass: bool = False  # hevc_nvenc: its own two-pass mode within one encode
    level: str = ""  # HEVC level ("5.1"); "" = the encoder's choice
    tier: str = "main"
    total_frames: int = 0  # expected frame count (0 = unknown): lets VBV end as full as it began
    sample_aspect: Fraction | None = None  # pixel aspect for the VUI and the MP4 'pasp' box; None = square


def x265_params(cfg: EncoderConfig) -> str:
    """The ``x265-params`` string for HDR10 (x265 CLI docs, "VUI" and "HDR10" sections)."""
    params = [
        "hdr10=1",
        "hdr10-opt=1",
        "repeat-headers=1",
        "colorprim=bt2020",
        "transfer=smpte2084",
        "colormatrix=bt2020nc",
        "range=limited",
        f"master-display={cfg.mastering.x265_master_display()}",
        "max-cll=0,0",
        "log-level=error",
    ]
    if cfg.chroma_siting != "left":
        params.append(f"chromaloc={_CHROMALOC[cfg.chroma_siting]}")
    if cfg.bitrate:
        params.append(f"bitrate={_kbit(cfg.bitrate)}")
    if cfg.maxrate:
        params += [f"vbv-maxrate={_kbit(cfg.maxrate)}", f"vbv-bufsize={_kbit(cfg.bufsize)}"]
        if cfg.total_frames:  # end with the buffer as full as it began: the file averages ≤ maxrate
            params += [f"total-frames={cfg.total_frames}", f"vbv-init={VBV_INIT}", f"vbv-end={VBV_INIT}"]
    if cfg.keyint:  # exactly every N frames: no scene-cut keyframes, no shorter GOPs
        params += [f"keyint={cfg.keyint}", f"min-keyint={cfg.keyint}", "scenecut=0"]
    if cfg.closed_gop:
        params.append("open-gop=0")
    if cfg.rc_pass:
        params += [f"pass={cfg.rc_pass}", f"stats={_escape_param(cfg.stats)}"]
    if cfg.level:
        params += [f"level-idc={cfg.level}", f"high-tier={int(cfg.tier == 'high')}"]
    if cfg.extra_params:
        params.append(cfg.extra_params)
    return ":".join(params)


def nvenc_options(cfg: EncoderConfig) -> dict[str, str]:
    """hevc_nvenc options: Main10, VBR; constant quality (cq) unless a bit rate is given.

    ``--two-pass`` maps to NVENC's own two-pass mode (``multipass=fullres``, within one encode);
    ``--keyint`` to a fixed GOP without scene-cut keyframes, every keyframe an IDR (closed).
    """
    opts = {"preset": "p5", "tune": "hq", "rc": "vbr", "profile": "main10", "bf": "3", "b_ref_mode": "middle"}
    if cfg.bitrate:
        opts["b"] = str(cfg.bitrate)
    else:
        opts.update(cq=f"{cfg.crf:g}", b="0")
    if cfg.maxrate:
        opts.update(maxrate=str(cfg.maxrate), bufsize=str(cfg.bufsize))
    if cfg.multipass:
        opts["multipass"] = "fullres"
    if cfg.keyint:
        opts.update({"g": str(cfg.keyint), "no-scenecut": "1", "strict_gop": "1", "forced-idr": "1"})
    if cfg.level:
        opts.update(level=cfg.level, tier=cfg.tier)
    return opts


def encoder_options(cfg: EncoderConfig) -> dict[str, str]:
    """The encoder's private options: the one dict both :class:`HevcEncoder` and
    :func:`check_encoder` open the codec with."""
    if cfg.encoder == "libx265":
        opts = {"preset": cfg.x265_preset, "x265-params": x265_params(cfg)}
        return opts if cfg.bitrate else {"crf": f"{cfg.crf:g}", **opts}
    return nvenc_options(cfg)  # NVENC: VBR, Main10; HDR10 static metadata goes in the container


def encoder_frame(cfg: EncoderConfig, y: np.ndarray, cb: np.ndarray, cr: np.ndarray, pts: int) -> av.VideoFrame:
    """10-bit planes → the ``av.VideoFrame`` the encoder takes (``yuv420p10le``, or P010 for NVENC:
    10-bit codes in the high bits, interleaved CbCr), tagged BT.2020/PQ, limited range."""
    layout = ENCODERS[cfg.encoder]
    frame = av.VideoFrame(cfg.width, cfg.height, layout)
    if layout == "yuv420p10le":
        for plane, src in zip(frame.planes, (y, cb, cr)):
            dst = np.frombuffer(plane, np.uint16).reshape(plane.height, plane.line_size // 2)
            dst[:, : src.shape[1]] = src
    else:  # p010le: 10 bits in the high bits, interleaved CbCr
        py, puv = frame.planes
        dst = np.frombuffer(py, np.uint16).reshape(py.height, py.line_size // 2)
        dst[:, : y.shape[1]] = y << 6
        dst = np.frombuffer(puv, np.uint16).reshape(puv.height, puv.line_size // 2)
        dst[:, 0 : 2 * cb.shape[1] : 2] = cb << 6
        dst[:, 1 : 2 * cb.shape[1] : 2] = cr << 6
    frame.pts = pts
    frame.time_base = cfg.time_base
    frame.color_primaries, frame.color_trc, frame.colorspace, frame.color_range = 9, 16, 9, 1
    return frame


def _kbit(bits: int) -> int:
    return max(1, int(round(bits / 1000)))


def _escape_param(value: str) -> str:
    """Escape a value for FFmpeg's ``x265-params`` list (``key=value:key=value``)."""
    return re.sub(r"([\\:=])", r"\\\1", value)


# --------------------------------------------------------------------------------------
# Delivery settings: rates, keyframe interval, user x265 parameters
# --------------------------------------------------------------------------------------

_RATE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*([kmg]?)(?:bit/s|bps|b)?$", re.IGNORECASE)
_RATE_UNITS = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def parse_rate(value: str | int | float | None, what: str = "rate") -> int:
    """``"8M"``, ``"800k"``, ``"2.5M"`` or a number of bit/s → bit/s (SI prefixes, as FFmpeg);
    ``None``/``""``/0 → 0 (not set)."""
    if value is None or value == "" or value == 0:
        return 0
    if isinstance(value, bool):
        raise UsageError(f"invalid {what} {value!r}: use e.g. 8M or 800k")
    if isinstance(value, (int, float)):
        bits = float(value)
    else:
        m = _RATE.match(value.strip())
        if not m:
            raise UsageError(f"invalid {what} {value!r}: use e.g. 8M or 800k")
        bits = float(m.group(1)) * _RATE_UNITS[m.group(2).lower()]
    if not math.isfinite(bits) or bits < 1000:
        raise UsageError(f"invalid {what} {value!r}: must be at least 1k")
    return int(round(bits))


def parse_keyint(value: str | int | float | None, rate: Fraction | None) -> int:
    """``48`` (frames) or ``"2s"`` (seconds, at the stream's frame rate) → frames; None → 0."""
    if value is None or value == "" or value == 0:
        return 0
    text = str(value).strip().lower()
    try:
        if isinstance(value, bool):
            raise ValueError
        if text.endswith("s"):
            seconds = Fraction(text[:-1])
            if not rate:
                raise UsageError(f"--keyint {value}: the input's frame rate is unknown; give it in frames")
            frames = round(seconds * Fraction(rate))
        else:
            number = Fraction(text)
            if number.denominator != 1:
                raise ValueError
            frames = int(number)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"invalid --keyint {value!r}: frames (48) or seconds (2s)") from None
    if frames < 1:
        raise UsageError(f"invalid --keyint {value!r}: must be at least one frame")
    return frames


#: x265 parameters hdrvideo sets for HDR10 and the Main 10 bitstream (the VUI colour tags, the
#: ST 2086 / CTA-861.3 SEI, headers on every keyframe, the input/output format): a user value
#: would break the HDR10 signalling or the stream the muxer expects.
X265_RESERVED = frozenset({
    "colorprim", "transfer", "colormatrix", "range", "chromaloc", "master-display", "max-cll",
    "hdr", "hdr10", "hdr-opt", "hdr10-opt", "repeat-headers", "annexb", "atc-sei", "dolby-vision-profile",
    "dolby-vision-rpu", "input-depth", "output-depth", "input-csp", "input-res", "fps", "profile", "interlace",
})
#: x265 parameters with their own hdrvideo option (kept consistent with levels, chunks and passes)
X265_OWN_OPTION = {
    "crf": "--crf", "bitrate": "--bitrate", "vbv-maxrate": "--maxrate", "vbv-bufsize": "--bufsize",
    "pass": "--two-pass", "stats": "--two-pass", "keyint": "--keyint", "min-keyint": "--keyint",
    "level-idc": "--level", "level": "--level", "high-tier": "--tier", "preset": "--x265-preset",
}


def _x265_name(key: str) -> str:
    name = key.strip().lower().replace("_", "-")
    return name[3:] if name.startswith("no-") else name


def parse_x265_params(text: str | None) -> list[tuple[str, str]]:
    """``"k=v:k=v"`` → [(k, v)]; a bare ``k`` means ``k=1`` (x265's boolean form). Backslash
    escapes (``\\:``) are kept for FFmpeg, which unescapes them."""
    if not text or not text.strip():
        return []
    out = []
    for item in re.split(r"(?<!\\):", text.strip()):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not key or not re.fullmatch(r"[A-Za-z0-9_-]+", key):
            raise UsageError(f"invalid --x265-params item {item!r}: use key=value:key=value")
        out.append((key, value.strip() if sep else "1"))
    return out


def check_x265_params(text: str | None, *, keyint: bool = False, closed_gop: bool = False) -> str:
    """Validate the user's ``--x265-params`` and return them normalised (``k=v:k=v``).

    Refused with one line: keys that would break HDR10 signalling (:data:`X265_RESERVED`), keys
    that have their own option (:data:`X265_OWN_OPTION`), ``scenecut``/``open-gop`` against a
    fixed ``--keyint``/``--closed-gop``, and names or values libx265 itself rejects
    (``x265_param_parse`` of the libx265 PyAV ships, where it can be loaded).
    """
    items = parse_x265_params(text)
    for key, _value in items:
        name = _x265_name(key)
        if name in X265_RESERVED:
            raise UsageError(f"--x265-params {key}: would break the HDR10 signalling hdrvideo writes; not allowed")
        if name in X265_OWN_OPTION:
            raise UsageError(f"--x265-params {key}: use {X265_OWN_OPTION[name]} instead")
        if keyint and name in ("scenecut", "hist-scenecut", "scenecut-bias"):
            raise UsageError(f"--x265-params {key}: keyframes are fixed by --keyint")
        if closed_gop and name == "open-gop":
            raise UsageError(f"--x265-params {key}: contradicts --closed-gop")
    lib = _libx265()
    if lib is not None and items:
        param = lib.x265_param_alloc()
        try:
            lib.x265_param_default(param)
            for key, value in items:
                raw = value.replace("\\:", ":").replace("\\=", "=").replace("\\\\", "\\")
                rc = lib.x265_param_parse(param, key.encode(), raw.encode())
                if rc == -1:
                    raise UsageError(f"--x265-params {key}: libx265 has no such parameter")
                if rc != 0:
                    raise UsageError(f"--x265-params {key}={value}: libx265 rejects this value")
        finally:
            lib.x265_param_free(param)
    return ":".join(f"{k}={v}" for k, v in items)


@functools.lru_cache(maxsize=1)
def _libx265():
    """The libx265 that PyAV's FFmpeg uses (bundled in the wheel), for ``x265_param_parse``; or None."""
    base = os.path.dirname(os.path.dirname(av.__file__))
    patterns = [os.path.join(base, "av.libs", "libx265*"), os.path.join(os.path.dirname(av.__file__), ".dylibs", "libx265*"),
                os.path.join(base, "av.libs", "x265*.dll")]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            try:
                lib = ctypes.CDLL(path)
                lib.x265_param_alloc.restype = ctypes.c_void_p
                lib.x265_param_default.argtypes = [ctypes.c_void_p]
                lib.x265_param_free.argtypes = [ctypes.c_void_p]
                lib.x265_param_parse.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
                lib.x265_param_parse.restype = ctypes.c_int
                return lib
            except (OSError, AttributeError):
                continue
    log.debug("libx265 not found beside PyAV; --x265-params names are not checked before encoding")
    return None


class HevcEncoder:
    """Encodes packed frames into a video-only MP4 (``moov`` last, for the HDR10 box patch)."""

    def __init__(self, path: str | None, cfg: EncoderConfig, packet_sink=None) -> None:
        if cfg.encoder not in ENCODERS:
            raise UsageError(f"unknown encoder {cfg.encoder!r} (choose from {', '.join(ENCODERS)})")
        if not encoder_available(cfg.encoder):
            raise EncoderError(f"encoder {cfg.encoder} is not available in this FFmpeg build")
        self.cfg = cfg
        self.layout = ENCODERS[cfg.encoder]
        self.path = path
        try:
            # no path: the packets are dropped (the analysis pass of a two-pass encode)
            self.container = av.open(path or os.devnull, "w", format="mp4" if path else "null")
            rate = cfg.rate or Fraction(25)
            s = self.container.add_stream(cfg.encoder, rate=rate)
            s.width, s.height = cfg.width, cfg.height
            s.pix_fmt = self.layout
            s.time_base = cfg.time_base
            s.codec_context.time_base = cfg.time_base
            cc = s.codec_context
            cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = 9, 16, 9, 1
            s.codec_tag = "hvc1"
            if cfg.threads:
                cc.thread_count = cfg.threads
            s.options = encoder_options(cfg)
            if cfg.rotation:
                s.set_display_rotation(cfg.rotation)
            if cfg.sample_aspect:  # libx265/NVENC write it into the VUI, the MP4 muxer a 'pasp' box
                cc.sample_aspect_ratio = cfg.sample_aspect
            self.stream = s
            # Open now, not lazily at the first frame: with MP4's global-header flag the parameter
            # sets (VPS/SPS/PPS) exist only in the extradata made here — NVENC then writes none
            # in-band (FFmpeg nvenc.c: disableSPSPPS) — and the light meter must have them
            # before it decodes the first packet.
            cc.open()
        except av.error.FFmpegError as err:
            try:
                self.container.close()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
            raise EncoderError(f"cannot start {cfg.encoder}: {err.strerror or err}") from err
        self.frames = 0
        self._last_dts: int | None = None
        self._captions: dict[int, bytes] = {}  # pts → A/53 cc_data of frames not yet out of the encoder
        self.packet_sink = packet_sink  # sees every packet before it is muxed (light metering)

    def _frame(self, y: np.ndarray, cb: np.ndarray, cr: np.ndarray, pts: int) -> av.VideoFrame:
        return encoder_frame(self.cfg, y, cb, cr, pts)

    def _mux(self, packet: av.Packet) -> None:
        """Mux, repairing the garbage DTS libx265 emits for clips of one or two frames.

        (Seen with FFmpeg 8.1/x265 4.x: ``dts`` ≈ -2^38 for very short encodes.) A DTS that is
        missing, after its PTS, not increasing, or absurdly far before the PTS is replaced by
        the smallest valid value.
        """
        d, p = packet.dts, packet.pts
        limit = int(10 / self.cfg.time_base)  # 10 s of reorder delay is far beyond any encoder's
        if p is not None and (d is None or d > p or (self._last_dts is not None and d <= self._last_dts) or p - d > limit):
            packet.dts = p if self._last_dts is None else max(self._last_dts + 1, min(p, self._last_dts + 1))
        self._last_dts = packet.dts
        cc = self._captions.pop(packet.pts, None) if self._captions else None
        if cc is not None:
            packet = with_sei(packet, a53_sei_nal(cc))
        if self.packet_sink is not None:
            self.packet_sink(packet)
        self.container.mux(packet)

    def encode(self, y: np.ndarray, cb: np.ndarray, cr: np.ndarray, pts: int, captions: bytes | None = None) -> None:
        """Encode one frame; ``captions`` (A/53 ``cc_data``) go into its access unit as SEI
        (:mod:`hdrvideo.media.captions`) when the encoder hands that picture out."""
        if captions:
            self._captions[pts] = captions
        try:
            for packet in self.stream.encode(self._frame(y, cb, cr, pts)):
                self._mux(packet)
        except av.error.FFmpegError as err:
            raise EncoderError(f"{self.cfg.encoder} failed: {err.strerror or err}") from err
        self.frames += 1

    def close(self) -> None:
        try:
            for packet in self.stream.encode(None):
                self._mux(packet)
            self.container.close()
        except av.error.FFmpegError as err:
            raise EncoderError(f"{self.cfg.encoder} failed while flushing: {err.strerror or err}") from err

    @property
    def extradata(self) -> bytes | None:
        """The out-of-band parameter sets (hvcC payload); available from construction on."""
        return self.stream.codec_context.extradata

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - best effort on an error path
            pass
