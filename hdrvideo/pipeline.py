"""The conversion pipeline: decode → device chain → encode → light meter → mux.

Threads joined by bounded queues, so decode, device work and encode overlap and memory does
not grow with video length::

    decode thread ──[queue]──▶ device thread ──[queue]──▶ encode thread ──[queue]──▶ meter thread
    (PyAV, planes into       (R'G'B', the stage chain     (libx265 /                 (decodes the
     pooled buffers)          of hdrvideo.stages, 4:2:0)   hevc_nvenc)                HEVC again)
                                                                     ──▶ final mux (audio, subtitles, HDR10 boxes)

:meth:`Pipeline.plan` decides everything before any frame is decoded; the stages are built
from the plan. Timestamps travel with the frames; nothing is recomputed from a frame rate.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import logging
import math
import os
import queue
import resource
import shutil
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import colour, signals
from . import errors as hdrvideo_errors
from .errors import InputError, OutputExistsError, UnsupportedInputError, UsageError
from .fsutil import make_work_dir, remove_stale_work_dirs
from .media.crop import CropRect, check_crop, detect_crop, parse_crop
from .media.decode import Decoder, FrameBatch, decoder_time_base, deinterlaced_rate, parse_time
from .media.encode import EncoderConfig, HevcEncoder, check_encoder, check_x265_params, parse_keyint, parse_rate
from .media.hdr10_boxes import MasteringMetadata
from .media.hevc_levels import check_level, parse_level
from .media.mux import OUTPUT_FORMATS, MuxOptions, StreamWindow, mux_final, output_format, parse_selection, select_streams
from .media.plane_cache import PlaneCacheReader, PlaneCacheWriter
from .media.probe import (FIELD_ADVICE_MODES, TELECINE_RATES, FieldStats, MediaInfo, VideoInfo, apply_colour_overrides,
                          colour_reading, field_advice, field_finding, probe, require_sdr_video)
from .presets import (
    BACKEND_NAMES,
    OPTION_FIELDS,
    Preset,
    check_delivery,
    check_option,
    check_tile,
    load_preset,
    output_sample_aspect,
    output_size,
)
from .dequantize import code_step
from .processors import Processor, build_processor
from .processors.temporal import DEFAULT_TIME_CONSTANT_S
from .stages import PackedBatch, PadPlanes, ProcessStage, build_chain
from .torch_threads import IntraOpThreads

__all__ = ["ConvertOptions", "ProgressEvent", "Report", "Plan", "Pipeline", "ProcessStage", "PackedBatch", "LightMeter",
           "default_output", "convert", "input_video", "deinterlace_settings", "detected_deinterlace",
           "deinterlaced_rate_factor", "field_advice_line", "input_notices", "DEINTERLACE_MODES"]

log = logging.getLogger(__name__)


#: Progress stages, in order: the analysis pass of a two-pass encode; frames through the device
#: chain and into the encoder; the encoder's flush (frames still in its lookahead); light
#: metering of the last packets; muxing; done. ``frame`` counts frames through the chain in the
#: current pass (it is ``total`` once converting ends).
PROGRESS_STAGES = ("analyse", "convert", "flush", "meter", "mux", "done")


@dataclass(frozen=True)
class ProgressEvent:
    frame: int
    total: int  # 0 = unknown
    fps: float
    eta_s: float | None
    stage: str  # one of PROGRESS_STAGES


#: Hidden work folders beside outputs (``.NAME.*.hdrvideo-tmp``, chunked runs' ``…-chunks``);
#: those whose owner process is gone are removed by the next run into the same folder.
WORK_SUFFIXES = (".hdrvideo-tmp", ".hdrvideo-chunks")


@dataclass
class ConvertOptions:
    """Everything a conversion can be told. ``None`` means "the preset's value"."""

    preset: str | Preset = "bt2408"
    weights: str | None = None
    backend: str = "auto"
    device: str | None = None
    start: str | float | None = None
    duration: str | float | None = None
    encoder: str | None = None
    crf: float | None = None
    x265_preset: str | None = None
    batch: int | None = None
    tile: int | None = None
    #: ST 2086 maximum luminance (cd/m²) and the peak every preset rolls off (hdr-expand: expands) to
    peak_nits: float | None = None
    #: where SDR reference white (100 % SDR) lands, cd/m² (neural presets: their output scaled by sdr_white/203)
    sdr_white: float | None = None
    #: the look of a neural preset with styles: "real" or "broadcast" (None = the preset's)
    style: str | None = None
    #: dequantise the source before the processor: "auto" (8-bit sources), "on" or "off"
    deband: str | None = None
    #: luma adjustment of the 4:2:0 packing (H.Sup15): None = the preset's (on)
    luma_adjust: bool | None = None
    force: bool = False
    copy_audio: bool = True
    copy_subtitles: bool = True
    #: CEA-608/708 captions inside the video: None = as ``copy_subtitles`` (chunk parts, which
    #: leave subtitle streams to the join, still carry them)
    copy_captions: bool | None = None
    queue_size: int = 2
    light_level: str = "decoded"  # MaxCLL/MaxFALL measured on the decoded output, or the encoder "input"
    #: interlaced input: "auto" deinterlaces what the stream says is interlaced, "on" every
    #: input, "off" none (bwdif, one output frame per field); "ivtc" matches fields into film
    #: frames (3:2 pulldown: 29.97i → 23.976p; 2:2 at other rates); "detect" picks ivtc, off or
    #: auto from the stream's fields
    deinterlace: str = "auto"
    #: how to read the input's colour, over its tags and the size-based guesses
    input_matrix: str | None = None  # bt709 | bt601 | bt2020
    input_primaries: str | None = None  # bt709 | bt601-525 | bt601-625 | bt2020
    input_range: str | None = None  # limited | full
    #: "auto": neural presets smooth their image-level statistics over time, reset at scene cuts;
    #: "off": every frame on its own
    temporal_smoothing: str = "auto"
    #: the network's working set: bytes, or "2G"/"1500M"; None = automatic (512 MiB on the CPU,
    #: half the free GPU memory); frames that need more run in exact tiles
    memory_limit: int | str | None = None
    progress: Callable[[ProgressEvent], None] | None = None
    #: extra options for the inference backend (e.g. ``{"threads": 2}`` for onnxruntime)
    backend_options: dict[str, Any] | None = None
    # Delivery (README "Delivery"); None = the preset's [encode] value. Rates: bit/s or "8M"/"800k".
    x265_params: str | None = None  # "k=v:k=v", merged with the HDR10 parameters
    keyint: int | str | None = None  # keyframe every N frames exactly, or "2s"
    closed_gop: bool | None = None
    bitrate: int | str | None = None  # average bit rate (ABR) instead of crf
    maxrate: int | str | None = None  # VBV peak rate (with bufsize), with crf or bitrate
    bufsize: int | str | None = None
    two_pass: bool | None = None  # with bitrate
    two_pass_cache: str = "auto"  # auto | planes | recompute: how the second pass gets its frames
    level: str | float | None = None  # HEVC level, "5.1"
    tier: str | None = None  # main | high
    fragmented: bool | None = None  # fragmented (CMAF-style) MP4/MOV
    audio: str | None = None  # copy | aac | none (copy_audio=False means none)
    audio_bitrate: int | str | None = None  # AAC; default 64 kbit/s per channel
    audio_streams: str | list | None = None  # indices / language codes, "all" (default) or "none"
    subtitle_streams: str | list | None = None
    crop: str | None = None  # "auto", "W:H:X:Y" or "none"
    pad_back: bool | None = None  # pad a cropped picture back to the full frame with black bars
    #: (first, count): only these frames, by index in presentation order (chunked conversion)
    frame_range: tuple[int, int] | None = None


@dataclass
class Report:
    """What a conversion did, with measured HDR10 light levels and per-stage timings."""

    input: str
    output: str
    preset: str
    processor: str
    encoder: str
    frames: int
    seconds: float
    fps: float
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    max_cll: int
    max_fall: int
    stage_seconds: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    streams_copied: list[str] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    #: how the input's colour was read: {"matrix": "bt601 (guessed)", "primaries": …, "range": …}
    input_colour: dict[str, str] = field(default_factory=dict)
    crop: str = ""  # the crop applied, W:H:X:Y ("" = none)
    #: MaxCLL as measured, before the cap at the mastering peak (encoder overshoot); 0 = unknown
    max_cll_measured: int = 0
    style: str = ""  # the neural preset's look ("real" or "broadcast"), "" for the others
    sample_aspect: str = ""  # the output's pixel aspect "W:H" when not square (anamorphic sources)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(device: str | None) -> str:
    """``None`` → cuda when torch sees a GPU, else cpu; a CUDA device that is absent is a usage error."""
    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"invalid --device {device!r} (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: torch sees no CUDA GPU here (torch {torch.__version__})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type != "cpu":
        raise UsageError(f"unsupported --device {device!r} (use cpu, cuda or cuda:N)")
    return str(dev)


def check_output_path(src: str | os.PathLike[str], dst: str | os.PathLike[str], force: bool) -> None:
    """Refuse, before any work, an output that cannot be written: a folder, an unsupported
    extension, the input itself, an existing file without ``force``, a missing or read-only
    folder. Raises :class:`UsageError` (one line)."""
    src, dst = str(src), str(dst)
    if os.path.isdir(dst):
        raise UsageError(f"output is a folder: {dst} (give a file name ending in {', '.join(OUTPUT_FORMATS)})")
    output_format(dst)  # validates the extension
    if os.path.abspath(dst) == os.path.abspath(src):
        raise UsageError("output must differ from the input")
    if os.path.exists(dst) and not force:
        raise OutputExistsError(f"output exists: {dst} (use --force to overwrite)")
    parent = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(parent):
        raise UsageError(f"output folder does not exist: {parent}")
    if not _writable(parent):
        raise UsageError(f"output folder is not writable: {parent}")


def _writable(folder: str) -> bool:
    effective = os.access in os.supports_effective_ids
    return os.access(folder, os.W_OK | os.X_OK, effective_ids=effective)


def parse_bytes(value: int | str | None) -> int | None:
    """``2G``, ``1500M``, ``512k`` or a plain number of bytes → bytes (binary units); None passes."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        n = value
    else:
        text = str(value).strip().upper().removesuffix("B").removesuffix("I")
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
        try:
            n = int(float(text[:-1]) * units[text[-1]]) if text and text[-1] in units else int(text)
        except (ValueError, IndexError):
            raise UsageError(f"invalid memory size {value!r}: use bytes or a number with K, M or G (e.g. 2G)") from None
    if n < 0:
        raise UsageError(f"invalid memory size {value!r}: must not be negative")
    return n


def default_output(src: str | os.PathLike[str]) -> Path:
    """``movie.mp4`` → ``movie.hdr10.mp4`` beside the input (MP4 unless the input is MOV/MKV)."""
    p = Path(src)
    ext = p.suffix.lower() if p.suffix.lower() in OUTPUT_FORMATS else ".mp4"
    return p.with_name(p.stem + ".hdr10" + ext)


def _even(value: Fraction | float) -> int:
    return int(round(value / 2)) * 2


def resolve_delivery(preset: Preset, rate: Fraction | None, out_size: tuple[int, int]) -> Preset:
    """The preset with its delivery settings resolved for this output (``rate``: its frame rate):
    rates in bit/s, the keyframe interval in frames, the level normalised — and the level
    checked against the output's size, frame rate and rates (H.265 Annex A)."""
    e = preset.encode
    enc = dataclasses.replace(
        e, keyint=parse_keyint(e.keyint, rate), bitrate=parse_rate(e.bitrate, "bitrate"),
        maxrate=parse_rate(e.maxrate, "maxrate"), bufsize=parse_rate(e.bufsize, "bufsize"),
        audio_bitrate=parse_rate(e.audio_bitrate, "audio bitrate"), level=parse_level(e.level),
        x265_params=check_x265_params(e.x265_params, keyint=bool(e.keyint), closed_gop=e.closed_gop))
    check_level(enc.level, enc.tier, out_size[0], out_size[1], rate, enc.bitrate, enc.maxrate, enc.bufsize)
    return preset.replace(encode=enc)


def mux_options(opt: ConvertOptions, preset: Preset, info: MediaInfo, dst: str) -> tuple[MuxOptions, list[str]]:
    """What the final mux keeps (streams checked against the input), and warnings."""
    fmt, _tag = output_format(dst)
    enc = preset.encode
    if enc.fragmented and fmt not in ("mp4", "mov"):
        raise UsageError("--fragmented applies to MP4/MOV output")
    audio = enc.audio if opt.copy_audio else "none"
    notes: list[str] = []
    audio_ix = sub_ix = None
    if audio != "none" and opt.audio_streams is not None:
        picked, warn = select_streams(info.streams, "audio", parse_selection(opt.audio_streams))
        audio_ix, notes = tuple(picked), notes + warn
    if not opt.copy_subtitles:
        sub_ix = ()
    elif opt.subtitle_streams is not None:
        picked, warn = select_streams(info.streams, "subtitle", parse_selection(opt.subtitle_streams))
        sub_ix, notes = tuple(picked), notes + warn
    return MuxOptions(audio=audio, audio_bitrate=parse_rate(enc.audio_bitrate, "audio bitrate"), audio_streams=audio_ix,
                      subtitle_streams=sub_ix, fragmented=enc.fragmented), notes


# --------------------------------------------------------------------------------------
# What the input is, as a conversion reads it
# --------------------------------------------------------------------------------------

DEINTERLACE_MODES = ("auto", "on", "off", "ivtc", "fieldmatch", "detect")
_FIELD_WORDS = {"tt": "top field first", "bt": "top field first", "bb": "bottom field first",
                "tb": "bottom field first"}


def input_video(info: MediaInfo, options: ConvertOptions) -> VideoInfo:
    """The SDR video stream of ``info`` with the options' colour overrides applied."""
    video = require_sdr_video(info)
    return apply_colour_overrides(video, options.input_matrix, options.input_primaries, options.input_range)


def detected_deinterlace(path: str, video: VideoInfo, mode: str | bool) -> str | bool:
    """``mode`` with ``detect`` replaced by what the stream's fields say (:func:`field_advice`):
    ``ivtc`` for telecined film, ``off`` for progressive film flagged interlaced, ``fieldmatch`` for
    film a field out of step, else ``auto``."""
    if mode != "detect":
        return mode
    advice = field_advice(path, video)
    return "auto" if advice is None else FIELD_ADVICE_MODES[advice[0]]


def deinterlace_settings(video: VideoInfo, mode: str | bool) -> tuple[str, str] | None:
    """How a conversion deinterlaces: ``(deint, parity)`` for :class:`~hdrvideo.media.decode.Deinterlacer`,
    or None (the frames are taken as they are).

    ``auto`` deinterlaces a stream that is interlaced by its field order or by its first
    frame's flags; ``on`` every stream; ``off`` none. Every frame of a deinterlaced stream goes
    through ``bwdif`` (so the output has a constant field rate), with each frame's own field
    order when frames are flagged, else the stream's. ``detect`` must first be resolved by
    :func:`detected_deinterlace` (it reads the file). ``ivtc`` matches fields into the film's
    frames: at 29.97/30 frames/s it undoes 3:2 pulldown (``("ivtc", parity)``, 4 frames of 5),
    at other rates 2:2 pulldown (``("fieldmatch", parity)``, every frame kept); it needs a
    constant frame rate. ``fieldmatch`` is that frame-for-frame matching at any rate (30p
    material a field out of step in 29.97i, where ``ivtc`` would decimate).
    """
    if isinstance(mode, bool):  # a manifest's yes/no
        mode = "on" if mode else "off"
    if mode not in DEINTERLACE_MODES:
        raise UsageError(f"invalid deinterlace mode {mode!r} (choose from {', '.join(DEINTERLACE_MODES)})")
    if mode == "detect":
        raise ValueError("resolve --deinterlace detect with detected_deinterlace() first")
    if mode == "off" or (mode == "auto" and not video.interlaced):
        return None
    tff = video.top_field_first
    parity = "auto" if video.interlaced_frames or tff is None else ("tff" if tff else "bff")
    if mode == "ivtc":
        if not video.rate:
            raise UsageError("--deinterlace ivtc needs a constant frame rate, and the input declares none")
        return ("ivtc" if video.rate in TELECINE_RATES else "fieldmatch", parity)
    if mode == "fieldmatch":
        return ("fieldmatch", parity)
    return ("all", parity)


def deinterlaced_rate_factor(deinterlace: tuple[str, str] | None) -> Fraction:
    """Output frames per input frame: 1, 2 (bwdif, a frame per field) or 4/5 (3:2 inverse telecine)."""
    return Fraction(1) if deinterlace is None else deinterlaced_rate(deinterlace[0])


def field_advice_line(kind: str, stats: FieldStats, rate: Fraction | None) -> str:
    """One line of advice for a stream flagged interlaced whose frames are film (:func:`field_advice`)."""
    at = f" at {float(rate):.5g} frames/s" if rate else ""
    action = {"telecined": f"--deinterlace ivtc restores its {float(rate * deinterlaced_rate('ivtc')):.5g} frames/s "
                           "instead" if rate else "--deinterlace ivtc restores the film's frames",
              "progressive": f"--deinterlace off keeps them whole{at}",
              "shifted": f"--deinterlace fieldmatch matches the fields back into whole frames{at}"}[kind]
    return f"input {field_finding(kind, stats)}; {action}"


def input_notices(info: MediaInfo, video: VideoInfo, preset: Preset, options: ConvertOptions,
                  deinterlace: tuple[str, str] | None) -> list[str]:
    """One line for each thing a conversion assumes about the input or leaves out of the output."""
    notes = [f"assumed {a}" for a in video.assumed]
    if video.pulldown:
        notes.append(f"input is film with soft 3:2 pulldown (repeat-field flags show it as "
                     f"{float(video.rate * Fraction(5, 4)):.5g}i): converted at its {float(video.rate):.5g} "
                     "frames/s, each frame on that rate's even time grid")
    mode = options.deinterlace
    advice = field_advice(info.path, video) if mode in ("auto", "detect") else None  # cached: one idet run
    if mode == "detect" and advice is not None:
        done = {"telecined": "inverse-telecined", "progressive": "frames kept as they are",
                "shifted": "fields matched into whole frames"}[advice[0]]
        notes.append(f"--deinterlace detect: input {field_finding(*advice)}; {done}")
    if deinterlace is not None and deinterlace[0] == "ivtc":
        rate = float(video.rate * deinterlaced_rate("ivtc"))
        notes.append(f"--deinterlace ivtc: 3:2 pulldown undone (fieldmatch, decimate), {float(video.rate):.5g} → "
                     f"{rate:.5g} frames/s; frames with no matching field are deinterlaced with bwdif")
    elif deinterlace is not None and deinterlace[0] == "fieldmatch":
        at = f" at {float(video.rate):.5g} frames/s" if video.rate else ""
        notes.append(f"--deinterlace {options.deinterlace if options.deinterlace != 'detect' else 'fieldmatch'}{at}: "
                     "fields matched into whole frames (2:2 pulldown, fieldmatch), every frame kept; frames with "
                     "no matching field are deinterlaced with bwdif")
    elif deinterlace is not None:
        order = _FIELD_WORDS.get(video.field_order, "field order from each frame")
        rate = f" ({float(video.rate):g} → {float(video.rate) * 2:g} frames/s)" if video.rate else ""
        why = "input is interlaced" if video.interlaced else "--deinterlace on"
        notes.append(f"{why} ({order}): deinterlaced with bwdif, one progressive frame per field{rate}; "
                     "--deinterlace off keeps the frames as they are")
        if mode == "auto" and advice is not None:
            notes.append(field_advice_line(*advice, video.rate))
    if video.has_alpha:
        notes.append(f"input has an alpha channel ({video.pix_fmt}); HDR10 has none, so it is dropped "
                     "(transparent pixels keep their colour values)")
    others = [s for s in info.streams if s.type == "video" and s.index != video.index and not s.cover_art]
    if others:
        names = ", ".join(f"#{s.index} {s.codec}" for s in others)
        notes.append(f"input has {len(others) + 1} video streams; only stream #{video.index} is converted "
                     f"({names} left out)")
    if options.weights and preset.processor != "neural":
        notes.append(f"--weights is ignored: preset {preset.name} uses no network")
    if options.style and not (preset.model is not None and preset.model.styles):
        notes.append(f"--style is ignored: preset {preset.name} has no styles")
    return notes


# --------------------------------------------------------------------------------------
# Memory of a batch
# --------------------------------------------------------------------------------------

#: Working memory of one frame of a batch on the processing device, in bytes: float32 copies of
#: the colour path (R'G'B', the chain, 4:2:0 packing, light levels) per output pixel (measured
#: on CPU, peak RSS at batch 1 and 16–32, 320×180 input: 128 B, rounded up). A network needs
#: its architecture's working memory per input pixel (``ArchSpec.bytes_per_pixel``) for a whole
#: frame; frames that would exceed ``--memory-limit`` run in tiles within it
#: (:class:`~hdrvideo.processors.neural.NeuralProcessor`), and then each frame of the batch
#: only keeps its whole-frame statistics pass (IRNet: two 64-channel float32 maps, measured
#: ≈ 1 kB per input pixel) and the tile blend's accumulators (16 B per output pixel).
COLOUR_BYTES_PER_OUTPUT_PIXEL = 160
TILED_NETWORK_BYTES_PER_INPUT_PIXEL = 1100
#: At most this much RAM (and a quarter of what is available) goes to batching.
RAM_BUDGET_CAP = 2 << 30
#: At most this fraction of the free GPU memory goes to batching.
GPU_BUDGET_FRACTION = 0.5


def frame_memory(video: VideoInfo, out_size: tuple[int, int], preset: Preset, queue_size: int = 2) -> tuple[int, int]:
    """(host bytes, device bytes) that one more frame of batch costs — an estimate.

    Host: the decoder's pooled plane buffers (``queue_size + 2`` batches) and the packed 10-bit
    planes waiting for the encoder (as many). Device: :data:`COLOUR_BYTES_PER_OUTPUT_PIXEL` and,
    for networks, the smaller of the whole-frame working memory and what a tiled frame keeps
    (:data:`TILED_NETWORK_BYTES_PER_INPUT_PIXEL`; the tiles themselves stay within the fixed
    ``--memory-limit``, whatever the batch).
    """
    from .media.decode import layout_for

    lay = layout_for(video.pix_fmt, video.width, video.height, video.is_rgb)
    in_bytes = sum(h * w for h, w in lay.plane_shapes()) * lay.dtype.itemsize
    out_px = out_size[0] * out_size[1]
    host = (queue_size + 2) * (in_bytes + out_px * 3)  # 4:2:0 uint16 = 3 bytes per pixel
    net_px = video.width * video.height
    if preset.tile:
        net_px = min(net_px, preset.tile * preset.tile)
    device = out_px * COLOUR_BYTES_PER_OUTPUT_PIXEL
    if preset.processor == "neural" and preset.model is not None:
        from .models import get_spec

        whole = net_px * get_spec(preset.model.arch).bytes_per_pixel
        tiled = net_px * TILED_NETWORK_BYTES_PER_INPUT_PIXEL + out_px * 16
        device += min(whole, tiled)
    return host, device


def available_ram() -> int:
    """Bytes of RAM available to this process (MemAvailable, within a cgroup v2 limit)."""
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 8 << 30
    try:
        with open("/sys/fs/cgroup/memory.max") as fh:
            limit = fh.read().strip()
        with open("/sys/fs/cgroup/memory.current") as fh:
            used = int(fh.read())
        if limit != "max":
            avail = min(avail, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return avail


def cap_batch(batch: int, video: VideoInfo, out_size: tuple[int, int], preset: Preset, device: str,
              queue_size: int = 2, total: int = 0) -> tuple[int, str | None]:
    """``batch`` capped so that its estimated memory (:func:`frame_memory`) stays within a
    quarter of the available RAM (at most :data:`RAM_BUDGET_CAP`) and, on a GPU, half its free
    memory; then to the frame count. Returns (batch, a note when the memory cap applied)."""
    host, dev = frame_memory(video, out_size, preset, queue_size)
    ram_budget = min(available_ram() // 4, RAM_BUDGET_CAP)
    on_gpu = torch.device(device).type == "cuda"
    cap = max(1, ram_budget // max(1, host if on_gpu else host + dev))
    where, per = f"{ram_budget / 2**20:.0f} MB of RAM", (host if on_gpu else host + dev)
    if on_gpu:
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        gpu_cap = max(1, int(free * GPU_BUDGET_FRACTION) // max(1, dev))
        if gpu_cap < cap:
            cap, where, per = gpu_cap, f"{free * GPU_BUDGET_FRACTION / 2**20:.0f} MB of GPU memory", dev
    note = None
    if batch > cap:
        note = (f"--batch {batch} capped to {cap} to bound memory (about {per / 2**20:.0f} MB per frame of batch, "
                f"{where} allowed)")
        batch = cap
    if total > 0:
        batch = min(batch, total)
    return batch, note


# --------------------------------------------------------------------------------------
# Light metering of the encoded stream
# --------------------------------------------------------------------------------------


class LightMeter:
    """Measures MaxCLL/MaxFALL (CTA-861.3-A) on the *encoded* stream, as a player decodes it.

    The encoder's packets are decoded again (libavcodec HEVC) and max(R,G,B) per pixel of the
    decoded 10-bit planes gives the frame's peak and average light level, on the processing
    device (:func:`hdrvideo.colour.content_light_level_planes`, never below the exact value).
    Measuring after compression means no value can understate the output: ringing around
    highlights can add several per cent to the encoder input's peak.
    """

    def __init__(self, device: torch.device, siting: str = "left") -> None:
        import av

        self.device = device
        self.siting = siting
        self.decoder = av.CodecContext.create("hevc", "r")
        self.decoder.thread_type = "AUTO"
        self.max_cll = 0.0
        self.max_fall = 0.0
        self.frames = 0

    def _measure(self, frame) -> None:
        planes = []
        for p in frame.planes[:3]:
            # a view of the decoded plane (10-bit codes: the uint16 bits read the same as int16)
            arr = np.frombuffer(p, np.int16).reshape(p.height, p.line_size // 2)[:, : p.width]
            planes.append(torch.from_numpy(arr)[None].to(self.device, non_blocking=True))
        with torch.inference_mode():
            fmax, fmean = colour.content_light_level_planes(*planes, "bt2020", 10, False, self.siting)
        self.max_cll = max(self.max_cll, float(fmax.max()))
        self.max_fall = max(self.max_fall, float(fmean.max()))
        self.frames += 1

    @staticmethod
    def packet(data, pts: int | None, dts: int | None):
        """A copy of ``data`` (bytes or a packet) as a packet whose buffer FFmpeg owns.

        Never ``av.Packet(bytes)``: that buffer is a Python object's. Freeing a frame-threaded
        decoder unrefs the packets its threads still hold, and a Python-owned buffer's free
        callback then waits for the GIL that the freeing thread holds — a deadlock (seen about
        once in a hundred runs on 1–2 frame clips).
        """
        import av

        view = memoryview(data)
        copy = av.Packet(view.nbytes)
        memoryview(copy)[:] = view
        copy.pts, copy.dts = pts, dts
        return copy

    def feed(self, packet) -> None:
        """Decode one encoded packet (``None`` flushes) and measure the frames it yields."""
        for frame in self.decoder.decode(packet):
            self._measure(frame)


def _keep_freed_frame_memory() -> None:
    """Let glibc keep freed frame-sized blocks for reuse instead of returning them to the kernel.

    A frame's float planes (a few MB) are above glibc's default mmap threshold, so every
    temporary tensor of every batch was mapped fresh, page-faulted in (zero-filled) and
    unmapped again: measured as most of the CPU time of the classical device chain, and of the
    light meter. Raising ``M_MMAP_THRESHOLD`` (to its 32 MiB maximum) and ``M_TRIM_THRESHOLD``
    keeps such blocks on the heap. Process-wide and idempotent; memory stays bounded by the
    pipeline's peak working set. A no-op where the C library has no ``mallopt`` (non-glibc).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(-1, 128 << 20)  # M_TRIM_THRESHOLD
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD


def _yield_cpu_to_model(device: torch.device, model: bool = True, step: int = 5) -> None:
    """Lower the calling thread's CPU priority when a model runs on the CPU.

    On Linux niceness is per thread and inherited by the threads it creates (x265's pool,
    FFmpeg's decoder threads), so calling this at the start of the decode/encode/measure threads
    makes the model — the bottleneck on a CPU — win the cores whenever the stages compete, while
    the lighter stages still get all the idle time: they overlap with the model instead of
    slowing it down. A no-op on a GPU (the model thread mostly waits there) and where unsupported.
    Not used for the classical mapping: there x265 is the bottleneck and must not wait.
    """
    if not model or device.type != "cpu" or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + step))
    except OSError:
        pass


# --------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------

_END = object()
MIN_OUTPUT_WIDTH = 64


class _Stop(Exception):
    pass


@dataclass(frozen=True)
class Plan:
    """What a conversion will do, decided before any frame is decoded."""

    src: str
    dst: str
    video: VideoInfo
    preset: Preset  # resolved (never "auto"), with the options applied
    device: str
    out_size: tuple[int, int]
    mastering: MasteringMetadata
    start: Fraction | None
    duration: Fraction | None
    total: int  # expected frames, 0 = unknown
    assumed: tuple[str, ...] = ()
    #: the time base of the decoder's timestamps: the stream's, or the deinterlacer's (half the
    #: stream's for bwdif, one output frame for inverse telecine)
    time_base: Fraction | None = None
    #: (deint, parity) of the :class:`~hdrvideo.media.decode.Deinterlacer`, None = off
    deinterlace: tuple[str, str] | None = None
    #: what is assumed about the input or left out of the output, one line each
    notices: tuple[str, ...] = ()
    crop: CropRect | None = None  # source rectangle the decoder keeps
    picture_size: tuple[int, int] | None = None  # the processed picture; None = out_size
    pad_offset: tuple[int, int] | None = None  # where the picture sits in out_size (--pad-back)
    mux: MuxOptions = MuxOptions()
    two_pass_cache: str = ""  # "planes" or "recompute" when preset.encode.two_pass
    notes: tuple[str, ...] = ()  # warnings found while planning the delivery (stream selection)

    @property
    def rate(self) -> Fraction | None:
        """The output's frame rate: the input's, twice it when deinterlacing (a frame per field),
        4/5 of it after inverse telecine."""
        v = self.video.rate
        return v * deinterlaced_rate_factor(self.deinterlace) if v else v
    deband_step: float | None = None  # one source code in R'G'B' units when the deband stage runs
    #: the output's pixel aspect (anamorphic sources keep their display aspect); None = square
    sample_aspect: Fraction | None = None


class Pipeline:
    """One conversion. Build it, then :meth:`run` it; no global state is touched.

    :meth:`plan` decides everything from the input's probe, the preset and the options;
    :meth:`run` builds the stages (decoder, device chain, encoder, light meter), runs them in
    threads joined by bounded queues, muxes, and renames the result into place.
    """

    def __init__(self, src: str | os.PathLike[str], dst: str | os.PathLike[str] | None = None,
                 options: ConvertOptions | None = None, **overrides: Any) -> None:
        self.options = options or ConvertOptions()
        for key, value in overrides.items():
            if not hasattr(self.options, key):
                raise UsageError(f"unknown option {key!r}")
            setattr(self.options, key, value)
        self.src = str(src)
        self.dst = str(dst) if dst is not None else str(default_output(src))
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._frames_done = 0
        self._pass_name = "convert"
        self._stage = "convert"
        self._stages: list[str] = []  # finishing stages entered, in order
        self._last_progress: tuple[int, int, str] | None = None
        self._busy: dict[str, float] = {"decode": 0.0, "process": 0.0, "encode": 0.0, "measure": 0.0, "mux": 0.0}
        self._model_on_cpu = False
        self._process_threads: int | None = None

    # -- setup ----------------------------------------------------------------------------
    def _check_paths(self) -> None:
        check_output_path(self.src, self.dst, self.options.force)
        weights = self.options.weights
        if weights is not None and not os.path.isfile(weights):
            raise hdrvideo_errors.WeightsError(
                f"--weights {'is a folder' if os.path.isdir(weights) else 'file not found'}: {weights}")

    def _check_options(self) -> None:
        """Every option's type and range, before the input is even opened (one-line UsageError)."""
        opt = self.options
        for name in OPTION_FIELDS:
            if getattr(opt, name, None) is not None:
                check_option(name, getattr(opt, name))
        if opt.backend not in BACKEND_NAMES:
            raise UsageError(f"unknown backend {opt.backend!r} (choose from {', '.join(BACKEND_NAMES)})")
        if opt.light_level not in ("decoded", "input"):
            raise UsageError("light_level must be 'decoded' or 'input'")
        if opt.temporal_smoothing not in ("auto", "off"):
            raise UsageError("temporal_smoothing must be 'auto' or 'off'")
        if not isinstance(opt.preset, (str, os.PathLike, Preset)):
            raise UsageError(f"preset must be a name, a .toml path or a Preset, not {opt.preset!r}")
        parse_time(opt.start)
        parse_time(opt.duration)

    def _preset(self, info: VideoInfo) -> Preset:
        opt = self.options
        preset = opt.preset if isinstance(opt.preset, Preset) else load_preset(opt.preset)
        preset = preset.resolve(info.height)
        if opt.style is not None and preset.model is not None and preset.model.styles:
            preset = preset.with_style(opt.style)
        enc = preset.encode
        changes: dict[str, Any] = {}
        enc_changes = {f.name: getattr(opt, f.name) for f in dataclasses.fields(enc)
                       if f.name != "chroma_siting" and getattr(opt, f.name, None) is not None}
        if "crf" in enc_changes:
            if enc_changes.get("bitrate"):
                raise UsageError("--crf and --bitrate exclude each other (constant quality or average rate)")
            enc_changes["crf"] = float(enc_changes["crf"])
            enc_changes.setdefault("bitrate", 0)  # an explicit crf replaces the preset's bit rate
            if not enc_changes["bitrate"]:
                enc_changes.setdefault("two_pass", False)
        if enc_changes:
            enc = dataclasses.replace(enc, **enc_changes)
            changes["encode"] = enc
        check_delivery(enc)
        if opt.crop is not None:
            changes["crop"] = "" if str(opt.crop).strip().lower() in ("", "none") else str(opt.crop).strip()
        if opt.pad_back is not None:
            changes["pad_back"] = bool(opt.pad_back)
        if opt.two_pass_cache not in ("auto", "planes", "recompute"):
            raise UsageError("two_pass_cache must be auto, planes or recompute")
        if opt.batch is not None:
            if opt.batch < 1:
                raise UsageError("--batch must be ≥ 1")
            changes["batch"] = int(opt.batch)
        if opt.tile is not None:
            check_tile(int(opt.tile), preset.tile_overlap)
            changes["tile"] = int(opt.tile)
        if opt.peak_nits is not None:
            peak = float(opt.peak_nits)
            if not preset.mastering.min_luminance < peak:
                raise UsageError(f"--peak-nits must be above the mastering minimum "
                                 f"({preset.mastering.min_luminance:g} cd/m²), not {peak:g}")
            changes["mastering"] = dataclasses.replace(preset.mastering, max_luminance=peak)
        if opt.sdr_white is not None:
            changes["sdr_white"] = float(opt.sdr_white)
        if opt.deband is not None:
            changes["deband"] = opt.deband
        return preset.replace(**changes) if changes else preset

    def plan(self) -> Plan:
        """Probe the input and decide sizes, colour, preset, mastering and time span (no decoding)."""
        opt = self.options
        self._check_paths()
        self._check_options()
        info = probe(self.src)
        video = input_video(info, opt)
        preset = self._preset(video)
        start = parse_time(opt.start)
        duration = parse_time(opt.duration)
        if duration is not None and duration <= 0:
            raise InputError("--duration must be positive")
        if start is not None and video.duration and start >= Fraction(video.duration).limit_denominator(10**6):
            raise InputError(f"--start {float(start):g}s is beyond the end of the video ({video.duration:.3f}s)")
        crop = self._crop(preset, video)
        picture_size = pad_offset = None
        if crop is not None and preset.pad_back:
            out_w, out_h = output_size(video.width, video.height, preset.scale, preset.target)
            fx, fy = Fraction(out_w, video.width), Fraction(out_h, video.height)
            pic_w = min(out_w, _even(crop.width * fx))
            pic_h = min(out_h, _even(crop.height * fy))
            picture_size = (pic_w, pic_h)
            pad_offset = (min(out_w - pic_w, _even(crop.x * fx)), min(out_h - pic_h, _even(crop.y * fy)))
        elif crop is not None:
            out_w, out_h = output_size(crop.width, crop.height, preset.scale, preset.target)
        else:
            out_w, out_h = output_size(video.width, video.height, preset.scale, preset.target)
        shown = (crop.width, crop.height) if (crop is not None and not preset.pad_back) else (video.width, video.height)
        sample_aspect = output_sample_aspect(video.sample_aspect, shown, (out_w, out_h))
        if out_w < MIN_OUTPUT_WIDTH:
            # libx265 4.x corrupts its heap on pictures 33–48 pixels wide (seen with FFmpeg 8.1's
            # build); nothing that narrow is a real HDR10 deliverable, so refuse cleanly.
            raise UnsupportedInputError(f"output would be {out_w} pixels wide; HEVC encoding needs at least {MIN_OUTPUT_WIDTH}")
        total = video.estimated_frames
        if duration is not None and video.rate:
            total = min(total or 10**12, int(math.ceil(duration * video.rate)))
        if start is not None and video.rate and video.duration:
            remaining = int(math.ceil((Fraction(video.duration).limit_denominator(10**6) - start) * video.rate))
            total = min(total or remaining, remaining)
        deinterlace = deinterlace_settings(video, detected_deinterlace(info.path, video, opt.deinterlace))
        total = int(math.ceil(total * deinterlaced_rate_factor(deinterlace)))  # a frame per field, or 4 of 5
        notices = input_notices(info, video, preset, opt, deinterlace)
        if opt.frame_range is not None:
            total = int(opt.frame_range[1])
        rate = video.rate * deinterlaced_rate_factor(deinterlace) if video.rate else video.rate  # = Plan.rate
        preset = resolve_delivery(preset, rate, (out_w, out_h))
        mux, notes = mux_options(opt, preset, info, self.dst)
        cache = ""
        if preset.encode.two_pass and preset.encode.encoder == "libx265":
            cache = opt.two_pass_cache
            if cache == "auto":  # re-running a network costs more than writing its output losslessly
                cache = "planes" if preset.processor == "neural" else "recompute"
        m = preset.mastering
        device = resolve_device(opt.device)
        batch, note = cap_batch(preset.batch, video, (out_w, out_h), preset, device, opt.queue_size, total)
        if note and opt.batch is not None:
            notes.append(note)  # the user asked for that batch: say so
        elif note:
            log.info("%s", note)
        if batch != preset.batch:
            preset = preset.replace(batch=batch)
        deband = preset.deband == "on" or (preset.deband == "auto" and video.bit_depth <= 8)
        return Plan(
            src=info.path, dst=self.dst, video=video, preset=preset, device=device,
            out_size=(out_w, out_h), mastering=MasteringMetadata(m.primaries, m.max_luminance, m.min_luminance),
            start=start, duration=duration, total=total,
            assumed=tuple(n for n in notices if n.startswith("assumed ")),
            time_base=decoder_time_base(video, deinterlace),
            deinterlace=deinterlace, notices=tuple(n for n in notices if not n.startswith("assumed ")),
            crop=crop, picture_size=picture_size, pad_offset=pad_offset, mux=mux, two_pass_cache=cache,
            notes=tuple(notes),
            deband_step=code_step(video.bit_depth, video.full_range or video.is_rgb) if deband else None,
            sample_aspect=sample_aspect,
        )

    def _crop(self, preset: Preset, video: VideoInfo) -> CropRect | None:
        spec = preset.crop
        if not spec:
            return None
        if spec == "auto":
            t0 = time.perf_counter()
            rect = detect_crop(self.src, video)
            self._busy["crop"] = time.perf_counter() - t0
            return rect
        return check_crop(parse_crop(spec), video)

    # -- threads --------------------------------------------------------------------------
    def _put(self, q: queue.Queue, item: Any) -> None:
        while True:
            if self._stop.is_set():
                raise _Stop
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _get(self, q: queue.Queue) -> Any:
        while True:
            if self._stop.is_set():
                raise _Stop
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue

    def _guard(self, fn: Callable[[], None], done: threading.Event) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except _Stop:
                pass
            except BaseException as err:  # noqa: BLE001 - re-raised in the main thread
                self._errors.append(err)
                self._stop.set()
            finally:
                done.set()

        return run

    @staticmethod
    def _wait(done: list[threading.Event], timeout: float = 30.0) -> None:
        """Wait for the threads' ``done`` events (never ``Thread.join``: see hdrvideo.signals)."""
        deadline = time.monotonic() + timeout
        for d in done:
            d.wait(timeout=max(0.0, deadline - time.monotonic()))

    def run(self, on_commit: Callable[[], None] | None = None) -> Report:
        """Convert; the output appears atomically at ``self.dst`` only on success.

        Ctrl-C (KeyboardInterrupt) stops the threads, waits for them and removes the temporary
        folder; the removal and the final rename are never cut short (:mod:`hdrvideo.signals`).
        ``on_commit`` is called right after the rename, with signals held (the CLI uses it to
        ignore signals from then on); without it a signal held during the rename is raised
        after it.
        """
        with signals.handling():
            return self._run_outer(on_commit)

    def _run_outer(self, on_commit: Callable[[], None] | None) -> Report:
        t_start = time.perf_counter()
        opt = self.options
        plan = self.plan()
        check_encoder(self._encoder_config(plan))  # NVENC opens with the real options and size, or fails here
        temporal = None
        if opt.temporal_smoothing == "auto" and plan.preset.processor == "neural":
            temporal = DEFAULT_TIME_CONSTANT_S * (float(plan.rate) if plan.rate else 24.0)  # output frames
        processor = build_processor(plan.preset, device=plan.device, weights=opt.weights, backend=opt.backend,
                                    input_size=(plan.crop.width, plan.crop.height) if plan.crop else
                                    (plan.video.width, plan.video.height), temporal_frames=temporal,
                                    memory_limit=parse_bytes(opt.memory_limit),
                                    **(opt.backend_options or {}))
        _keep_freed_frame_memory()
        on_cpu = processor.device.type == "cpu"
        self._model_on_cpu = on_cpu and hasattr(processor, "backend")
        # a processor's own CPU thread wish (the classical mapping: 1, leaving the cores to x265)
        self._process_threads = getattr(processor, "cpu_threads", None) if on_cpu else None
        warnings = list(plan.assumed) + list(plan.notices) + list(plan.notes)
        for w in warnings:
            log.warning("%s", w)
        parent = os.path.dirname(os.path.abspath(self.dst))
        remove_stale_work_dirs(parent, WORK_SUFFIXES)
        tmpdir = None
        try:
            with signals.critical():
                try:
                    tmpdir = make_work_dir(parent, f".{Path(self.dst).name}.", WORK_SUFFIXES[0])
                except OSError as err:
                    raise UsageError(f"cannot write in the output folder {parent}: {err.strerror or err}") from None
            with IntraOpThreads():
                return self._run(t_start, plan, processor, tmpdir, warnings, on_commit)
        finally:
            with signals.critical():
                if tmpdir is not None:
                    shutil.rmtree(tmpdir, ignore_errors=True)

    def _live_source(self, plan: Plan, processor: Processor) -> tuple[Decoder, ProcessStage]:
        """The decoder and the device stage (chain, packing, padding) for one pass over the input."""
        opt = self.options
        c = plan.crop
        decoder = Decoder(self.src, plan.video, plan.start, plan.duration, batch=plan.preset.batch,
                          pin_memory=torch.device(plan.device).type == "cuda", buffers=opt.queue_size + 2,
                          deinterlace=plan.deinterlace, crop=(c.width, c.height, c.x, c.y) if c else None,
                          frame_range=opt.frame_range,
                          keep_captions=opt.copy_subtitles if opt.copy_captions is None else opt.copy_captions)
        chain = build_chain(processor, plan.picture_size or plan.out_size, plan.mastering.max_luminance,
                            sdr_white=plan.preset.sdr_white, deband_step=plan.deband_step,
                            source_matrix=plan.video.matrix, chroma_siting=plan.preset.encode.chroma_siting)
        pad = PadPlanes(*plan.out_size, *plan.pad_offset) if plan.pad_offset is not None else None
        stage = ProcessStage(chain, decoder.layout, plan.video, processor.device, plan.preset.encode.chroma_siting,
                             measure=opt.light_level == "input", pad=pad, luma_adjust=plan.preset.encode.luma_adjust)
        return decoder, stage

    def _encoder_config(self, plan: Plan) -> EncoderConfig:
        e, video = plan.preset.encode, plan.video
        return EncoderConfig(
            width=plan.out_size[0], height=plan.out_size[1], time_base=plan.time_base or video.time_base,
            rate=plan.rate,
            encoder=e.encoder, crf=e.crf, x265_preset=e.x265_preset, chroma_siting=e.chroma_siting,
            mastering=plan.mastering, extra_params=e.x265_params, keyint=int(e.keyint), closed_gop=e.closed_gop,
            bitrate=int(e.bitrate), maxrate=int(e.maxrate), bufsize=int(e.bufsize), level=str(e.level), tier=e.tier,
            multipass=e.two_pass and e.encoder == "hevc_nvenc", total_frames=plan.total,
            sample_aspect=plan.sample_aspect)

    # -- the threads ---------------------------------------------------------------------
    def _decode(self, decoder: Decoder, q_out: queue.Queue, device: torch.device) -> None:
        _yield_cpu_to_model(device, self._model_on_cpu)
        it = iter(decoder)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            finally:
                self._busy["decode"] += time.perf_counter() - t0
            self._put(q_out, batch)
        self._put(q_out, _END)

    def _process(self, stage: ProcessStage, q_in: queue.Queue, q_out: queue.Queue) -> None:
        IntraOpThreads.use(self._process_threads)
        while True:
            batch: FrameBatch = self._get(q_in)
            if batch is _END:
                break
            t0 = time.perf_counter()
            try:
                packed = stage(batch.planes, batch.pts)
            finally:
                if batch.release:
                    batch.release()
            if stage.device.type == "cuda":
                torch.cuda.synchronize(stage.device)
            self._busy["process"] += time.perf_counter() - t0
            self._put(q_out, packed)
        self._put(q_out, _END)

    def _read_cache(self, reader: PlaneCacheReader, q_out: queue.Queue) -> None:
        """Second pass from the first pass's lossless planes (no decoding or processing again)."""
        it = iter(reader)
        while True:
            t0 = time.perf_counter()
            try:
                packed = next(it)
            except StopIteration:
                break
            finally:
                self._busy["decode"] += time.perf_counter() - t0
            self._put(q_out, packed)
        self._put(q_out, _END)

    def _measure(self, meter: LightMeter, q_in: queue.Queue) -> None:
        _yield_cpu_to_model(meter.device, self._model_on_cpu)
        # the same as the process thread: torch.set_num_threads also sets the default that a
        # thread's first parallel op picks up, so a different value here could reach a CPU model
        IntraOpThreads.use(self._process_threads)
        while True:
            packet = self._get(q_in)
            t0 = time.perf_counter()
            meter.feed(None if packet is _END else packet)
            self._busy["measure"] += time.perf_counter() - t0
            if packet is _END:
                break

    def _encode(self, plan: Plan, config: EncoderConfig, q_in: queue.Queue, meter: LightMeter | None,
                q_meter: queue.Queue, state: dict[str, Any], source: Any, output: str | None,
                cache: PlaneCacheWriter | None = None) -> None:
        _yield_cpu_to_model(torch.device(plan.device), self._model_on_cpu)
        enc = None

        def to_meter(packet) -> None:
            self._put(q_meter, LightMeter.packet(packet, packet.pts, packet.dts))

        try:
            while True:
                packed: PackedBatch = self._get(q_in)
                if packed is _END:
                    break
                t0 = time.perf_counter()
                if enc is None:
                    state["first_pts"] = packed.pts[0]
                    config = dataclasses.replace(config, rotation=source.stats.rotation)  # known once decoding began
                    enc = HevcEncoder(output, config, packet_sink=to_meter if meter else None)
                    if meter is not None and enc.extradata:  # the encoder is open: its parameter sets exist
                        meter.decoder.extradata = enc.extradata
                # closed captions go into the final pass's access units (an analysis pass leaves
                # them for the next, which may read cached planes instead of decoding)
                captions = getattr(source, "captions", None) if output is not None else None
                for i, pts in enumerate(packed.pts):
                    cc = captions.pop(pts, None) if captions else None
                    enc.encode(packed.y[i], packed.cb[i], packed.cr[i], pts - state["first_pts"], captions=cc)
                if cache is not None:
                    cache.write(packed)
                state["max"] = max(state["max"], float(packed.frame_max.max()))
                state["fall"] = max(state["fall"], float(packed.frame_mean.max()))
                self._frames_done += len(packed.pts)
                self._busy["encode"] += time.perf_counter() - t0
            final = self._pass_name == "convert"
            if enc is not None:
                if final:
                    self._enter("flush")
                t0 = time.perf_counter()
                enc.close()
                self._busy["encode"] += time.perf_counter() - t0
            if cache is not None:
                cache.close()
            if meter is not None:
                if final:
                    self._enter("meter")
                self._put(q_meter, _END)
        except BaseException:
            if enc is not None:
                enc.abort()
            if cache is not None:
                cache.abort()
            raise

    def _pass(self, t_start: float, plan: Plan, name: str, source: Any, stage: ProcessStage | None,
              config: EncoderConfig, output: str | None, meter: LightMeter | None, state: dict[str, Any],
              cache: PlaneCacheWriter | None = None) -> None:
        """One pass over the frames: (decode → process | cached planes) → encode (→ measure), in
        threads joined by bounded queues; progress events carry ``name`` as their stage."""
        opt = self.options
        self._frames_done = 0
        self._pass_name = self._stage = name
        q_dec: queue.Queue = queue.Queue(maxsize=opt.queue_size)
        q_enc: queue.Queue = queue.Queue(maxsize=opt.queue_size)
        q_meter: queue.Queue = queue.Queue(maxsize=256)
        if stage is not None:
            jobs: list[tuple[str, Callable[[], None]]] = [
                ("decode", lambda: self._decode(source, q_dec, stage.device)),
                ("process", lambda: self._process(stage, q_dec, q_enc)),
            ]
        else:
            jobs = [("read", lambda: self._read_cache(source, q_enc))]
        jobs.append(("encode", lambda: self._encode(plan, config, q_enc, meter, q_meter, state, source, output, cache)))
        if meter is not None:
            jobs.append(("measure", lambda: self._measure(meter, q_meter)))
        done = [threading.Event() for _ in jobs]
        threads = [threading.Thread(target=self._guard(fn, d), name=f"hdrvideo-{n}", daemon=True)
                   for (n, fn), d in zip(jobs, done)]
        try:
            if opt.progress:  # the pass starts (a short one may finish before the first report)
                self._emit(self._progress_event(t_start, plan.total, self._stage))
            for t in threads:
                t.start()
            last_emit = 0.0
            while True:
                running = [d for d in done if not d.is_set()]
                if not running:
                    break
                # a signal is held until the wait returns: raised inside Event.wait, it could
                # leave the event's lock held, and the stage that sets it would block forever
                with signals.critical():
                    running[0].wait(timeout=0.1)
                if self._stop.is_set():  # a stage failed: unblock the decoder, then wait for the others
                    source.stop = True
                    with signals.critical():
                        self._wait(done)
                    break
                now = time.perf_counter()
                if opt.progress and (now - last_emit >= 0.5 or len(self._stages) > self._stages_emitted):
                    last_emit = now
                    self._emit_stages(t_start, plan.total)
                    self._emit(self._progress_event(t_start, plan.total, self._stage))
        except BaseException:
            self._stop.set()
            source.stop = True
            with signals.critical():  # a second Ctrl-C must not leave threads running into exit
                self._wait([d for d, t in zip(done, threads) if t.ident is not None])
            raise
        if self._errors:
            raise self._errors[0]

    def _run(self, t_start: float, plan: Plan, processor: Processor, tmpdir: str, warnings: list[str],
             on_commit: Callable[[], None] | None = None) -> Report:
        opt = self.options
        preset, video = plan.preset, plan.video
        self._busy["setup"] = time.perf_counter() - t_start  # probe, model load, session/engine creation
        meter = LightMeter(torch.device(processor.device), preset.encode.chroma_siting) if opt.light_level == "decoded" else None
        state: dict[str, Any] = {"max": 0.0, "fall": 0.0, "first_pts": None,
                                 "intermediate": os.path.join(tmpdir, "video.mp4")}
        final_tmp = os.path.join(tmpdir, "output" + Path(self.dst).suffix.lower())
        config = self._encoder_config(plan)
        decoder, stage = self._live_source(plan, processor)
        source: Any = decoder
        if plan.two_pass_cache:  # two-pass libx265: an analysis pass writes the stats file
            stats = os.path.join(tmpdir, "x265-2pass.log")
            writer = PlaneCacheWriter(os.path.join(tmpdir, "pass1-planes.nut"), plan.out_size,
                                      plan.time_base or video.time_base, plan.rate) if plan.two_pass_cache == "planes" else None
            self._pass(t_start, plan, "analyse", decoder, stage, dataclasses.replace(config, rc_pass=1, stats=stats),
                       None, None, state, writer)
            first_frames = self._frames_done
            gc.collect()  # drop the first pass's encoder now: x265 completes its stats file when freed
            if not os.path.exists(stats):
                raise hdrvideo_errors.EncoderError("libx265 wrote no first-pass statistics")
            config = dataclasses.replace(config, rc_pass=2, stats=stats)
            if writer is not None:
                source, stage = PlaneCacheReader(writer.path, plan.time_base or video.time_base, plan.preset.batch,
                                                 decoder.stats), None
                source.captions = decoder.captions  # the first pass's, by the same timestamps
            else:
                source, stage = self._live_source(plan, processor)
        self._pass(t_start, plan, "convert", source, stage, config, state["intermediate"], meter, state)
        frames = self._frames_done
        if frames == 0:
            raise InputError(f"no video frames in the selected span of {plan.src}")
        if plan.two_pass_cache and frames != first_frames:
            raise hdrvideo_errors.EncoderError(f"the second pass saw {frames} frames, the first {first_frames}")
        warnings += decoder.stats.warnings

        light = {"max": state["max"], "fall": state["fall"]}
        if meter is not None:
            if meter.frames != frames:
                raise hdrvideo_errors.EncoderError(
                    f"light metering decoded {meter.frames} of {frames} encoded frames")
            light = {"max": meter.max_cll, "fall": meter.max_fall}
        # MaxCLL/MaxFALL: integers rounded up, so no value understates the content — up to the
        # mastering display's peak. The chain rolls the content off to that peak; what a decoder
        # shows above it is the encoder's ringing around highlights (tens of per cent around
        # small sharp ones at ordinary CRFs), which a display maps as the peak. So the values
        # written are capped at the peak, and the report keeps the measured ones.
        mastering = plan.mastering
        measured_cll = int(math.ceil(light["max"] - 1e-6))
        peak = int(math.floor(mastering.max_luminance))
        if measured_cll > peak:
            log.info("decoded MaxCLL %d cd/m² is above the %d cd/m² mastering peak (encoder overshoot around "
                     "highlights); MaxCLL is written as the peak", measured_cll, peak)
        meta = MasteringMetadata(mastering.primaries, mastering.max_luminance, mastering.min_luminance,
                                 max_cll=min(measured_cll, peak),
                                 max_fall=min(int(math.ceil(light["fall"] - 1e-6)), peak))
        tb = plan.time_base or video.time_base
        first_pts = state["first_pts"]
        t0_video = Fraction(video.start_time).limit_denominator(10**9)
        window = StreamWindow(
            offset=first_pts * tb,
            start=None if plan.start is None else first_pts * tb,
            end=None if plan.duration is None else t0_video + (plan.start or 0) + plan.duration,
        )
        self._emit_stages(t_start, plan.total)
        self._enter("mux")
        self._emit(self._progress_event(t_start, plan.total, "mux"))
        t0 = time.perf_counter()
        mux = mux_final(state["intermediate"], self.src, final_tmp, meta, window, opt.copy_audio, opt.copy_subtitles,
                        plan.mux)
        self._busy["mux"] += time.perf_counter() - t0
        warnings += mux.skipped
        if os.path.exists(self.dst) and not opt.force:
            raise OutputExistsError(f"output appeared while converting: {self.dst} (use --force to overwrite)")
        if os.path.isdir(self.dst):
            raise UsageError(f"output is a folder: {self.dst}")
        with signals.critical():  # the rename and the caller's commit hook are one step
            os.replace(final_tmp, self.dst)
            if on_commit is not None:
                on_commit()
        seconds = time.perf_counter() - t_start
        report = Report(
            input=plan.src, output=self.dst, preset=preset.name, style=preset.style, processor=processor.description,
            encoder=preset.encode.encoder, frames=frames, seconds=round(seconds, 3),
            fps=round(frames / seconds, 3) if seconds > 0 else 0.0,
            input_size=(video.width, video.height), output_size=plan.out_size,
            max_cll=meta.max_cll, max_fall=meta.max_fall, max_cll_measured=measured_cll,
            stage_seconds={k: round(v, 3) for k, v in self._busy.items()},
            warnings=warnings,
            streams_copied=mux.copied + (["closed captions (CEA-608/708, as A/53 SEI in the video)"]
                                         if decoder.stats.captions and decoder.keep_captions else []),
            peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            input_colour=colour_reading(video),
            crop=str(plan.crop) if plan.crop else "",
            sample_aspect=(f"{plan.sample_aspect.numerator}:{plan.sample_aspect.denominator}"
                           if plan.sample_aspect else ""),
        )
        self._emit(ProgressEvent(frames, frames, report.fps, 0.0, "done"))
        return report

    def _enter(self, stage: str) -> None:
        """A thread enters a finishing stage (the main thread reports each one)."""
        self._stage = stage
        self._stages.append(stage)  # list.append is atomic

    @property
    def _stages_emitted(self) -> int:
        return getattr(self, "_n_stages_emitted", 0)

    def _emit_stages(self, t_start: float, total: int) -> None:
        """Report every finishing stage entered since the last report, however short it was."""
        for name in self._stages[self._stages_emitted:]:
            self._emit(self._progress_event(t_start, total, name))
        self._n_stages_emitted = len(self._stages)

    def _emit(self, event: ProgressEvent) -> None:
        """Send ``event`` to the progress callback unless it repeats the last one's frame and stage."""
        key = (event.frame, event.total, event.stage)
        if self.options.progress is None or key == self._last_progress:
            return
        self._last_progress = key
        self.options.progress(event)

    def _progress_event(self, t_start: float, total: int, stage: str) -> ProgressEvent:
        """Frames through the device chain in this pass, their rate and the ETA (while converting)."""
        done = self._frames_done
        elapsed = time.perf_counter() - t_start
        fps = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / fps if fps > 0 and total and stage in ("analyse", "convert") else None
        return ProgressEvent(done, total, round(fps, 3), None if eta is None else round(max(eta, 0.0), 1), stage)


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str] | None = None, preset: str | Preset = "bt2408",
            **options: Any) -> Report:
    """Convert an SDR video file to HDR10. See :class:`ConvertOptions` for the options.

    Raises :class:`hdrvideo.errors.HdrvideoError` subclasses with one-line messages.
    """
    return Pipeline(src, dst, ConvertOptions(preset=preset), **options).run()


