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

import logging
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from ..errors import EncoderError, UsageError
from .hdr10_boxes import MasteringMetadata

__all__ = ["EncoderConfig", "HevcEncoder", "encoder_available", "check_encoder", "ENCODERS"]

log = logging.getLogger(__name__)

#: encoder name → the host pixel layout it takes
ENCODERS = {"libx265": "yuv420p10le", "hevc_nvenc": "p010le"}
_CHROMALOC = {"left": 0, "center": 1, "topleft": 2, "top": 3, "bottomleft": 4, "bottom": 5}


def encoder_available(name: str) -> bool:
    """True if PyAV's FFmpeg has this encoder (hevc_nvenc also needs an NVIDIA driver at run time)."""
    try:
        av.codec.Codec(name, "w")
        return True
    except (av.error.FFmpegError, ValueError):
        return False


def check_encoder(name: str) -> None:
    """Open the encoder once on a tiny picture, so a missing GPU/driver fails before any work."""
    if name not in ENCODERS:
        raise UsageError(f"unknown encoder {name!r} (choose from {', '.join(ENCODERS)})")
    if not encoder_available(name):
        raise EncoderError(f"encoder {name} is not available in this FFmpeg build")
    if name == "libx265":
        return
    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt = 256, 256, ENCODERS[name]
        ctx.time_base = Fraction(1, 25)
        ctx.open()
    except av.error.FFmpegError as err:
        raise EncoderError(
            f"{name} cannot be opened ({err.strerror or err}): it needs an NVIDIA GPU with NVENC and its driver"
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
    extra_params: str = ""  # appended to x265-params


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
    if cfg.extra_params:
        params.append(cfg.extra_params)
    return ":".join(params)


class HevcEncoder:
    """Encodes packed frames into a video-only MP4 (``moov`` last, for the HDR10 box patch)."""

    def __init__(self, path: str, cfg: EncoderConfig, packet_sink=None) -> None:
        if cfg.encoder not in ENCODERS:
            raise UsageError(f"unknown encoder {cfg.encoder!r} (choose from {', '.join(ENCODERS)})")
        if not encoder_available(cfg.encoder):
            raise EncoderError(f"encoder {cfg.encoder} is not available in this FFmpeg build")
        self.cfg = cfg
        self.layout = ENCODERS[cfg.encoder]
        self.path = path
        try:
            self.container = av.open(path, "w", format="mp4")
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
            if cfg.encoder == "libx265":
                s.options = {"crf": f"{cfg.crf:g}", "preset": cfg.x265_preset, "x265-params": x265_params(cfg)}
            else:  # NVENC: constant-quality VBR, Main10; HDR10 static metadata goes in the container
                s.options = {
                    "preset": "p5", "tune": "hq", "rc": "vbr", "cq": f"{cfg.crf:g}", "b": "0",
                    "profile": "main10", "bf": "3", "b_ref_mode": "middle",
                }
            if cfg.rotation:
                s.set_display_rotation(cfg.rotation)
            self.stream = s
        except av.error.FFmpegError as err:
            raise EncoderError(f"cannot start {cfg.encoder}: {err.strerror or err}") from err
        self.frames = 0
        self._last_dts: int | None = None
        self.packet_sink = packet_sink  # sees every packet before it is muxed (light metering)

    def _frame(self, y: np.ndarray, cb: np.ndarray, cr: np.ndarray, pts: int) -> av.VideoFrame:
        cfg = self.cfg
        frame = av.VideoFrame(cfg.width, cfg.height, self.layout)
        if self.layout == "yuv420p10le":
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
        if self.packet_sink is not None:
            self.packet_sink(packet)
        self.container.mux(packet)

    def encode(self, y: np.ndarray, cb: np.ndarray, cr: np.ndarray, pts: int) -> None:
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
        return self.stream.codec_context.extradata

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - best effort on an error path
            pass
