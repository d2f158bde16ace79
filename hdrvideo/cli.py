"""The ``hdrvideo`` command line: a thin typer layer over the Python API.

Errors are one line on stderr with a documented exit code (0 ok, 1 conversion failed,
2 usage or bad input, 3 partial batch); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from . import signals
from .errors import HdrvideoError
from .presets import AUDIO_MODES, BACKEND_NAMES, DEBAND_MODES, ENCODER_NAMES, STYLES, X265_PRESETS


# click's exception classes, wherever this typer takes click from (typer ≥ 0.2x vendors it)
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_ClickUsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _OneLineErrors(TyperGroup):
    """Click usage errors (unknown option, bad value) as one ``error: …`` line, exit code 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _ClickException as err:
            if not standalone_mode:
                raise
            message = err.format_message().replace("Value error, ", "")
            if not message.strip():  # no arguments: the help was shown, nothing to add
                raise SystemExit(err.exit_code) from None
            if isinstance(err, _ClickUsageError) and not isinstance(err, typer.BadParameter) and err.ctx is not None:
                message += f" (see '{err.ctx.command_path} --help')"
            raise SystemExit(_print_error(message, err.exit_code)) from None
        except typer.Abort:
            if not standalone_mode:
                raise
            raise SystemExit(_print_error("interrupted; no partial output was left", 130)) from None
        if not standalone_mode:
            return rv
        raise SystemExit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="hdrvideo",
    cls=_OneLineErrors,
    help="Convert SDR (BT.709) video to HDR10 (PQ, BT.2020, HEVC Main10) with classical or neural mapping.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# No user text (paths, preset fields, FFmpeg messages) is ever read as rich markup or emoji
# codes: styles are given as Text/style arguments only.
stdout = Console(markup=False, emoji=False, highlight=False)
stderr = Console(stderr=True, markup=False, emoji=False, highlight=False)
_state: dict[str, Any] = {"debug": False, "json_events": False}
log = logging.getLogger("hdrvideo")


def _choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A str Enum typer validates while parsing the command line (values as given)."""
    return Enum(name, [(v.replace("-", "_"), v) for v in values], type=str)  # type: ignore[return-value]


class LogLevel(str, Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class ProgressMode(str, Enum):
    auto = "auto"
    bar = "bar"
    json = "json"
    none = "none"


class DeinterlaceMode(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"
    ivtc = "ivtc"
    fieldmatch = "fieldmatch"
    detect = "detect"


class InputMatrix(str, Enum):
    bt709 = "bt709"
    bt601 = "bt601"
    bt2020 = "bt2020"


class InputPrimaries(str, Enum):
    bt709 = "bt709"
    bt601_525 = "bt601-525"
    bt601_625 = "bt601-625"
    bt2020 = "bt2020"


class InputRange(str, Enum):
    limited = "limited"
    full = "full"


Backend = _choices("Backend", BACKEND_NAMES)
Encoder = _choices("Encoder", ENCODER_NAMES)
X265Preset = _choices("X265Preset", X265_PRESETS)
LightLevel = _choices("LightLevel", ("decoded", "input"))
Engine = _choices("Engine", ("local", "ray"))
ChunkTransfer = _choices("ChunkTransfer", ("shared", "object-store"))
Tier = _choices("Tier", ("main", "high"))
AudioMode = _choices("AudioMode", AUDIO_MODES)
DebandMode = _choices("DebandMode", DEBAND_MODES)
StyleName = _choices("StyleName", STYLES)
TwoPassCache = _choices("TwoPassCache", ("auto", "planes", "recompute"))
TemporalSmoothing = _choices("TemporalSmoothing", ("auto", "off"))


def _memory_limit(value: str | None) -> str | None:
    """--memory-limit is checked when the command line is parsed (one-line usage error)."""
    from .pipeline import parse_bytes

    try:
        parse_bytes(value)
    except HdrvideoError as err:
        raise typer.BadParameter(str(err).strip()) from None
    return value


def _value(v: Any) -> Any:
    return v.value if isinstance(v, Enum) else v


def checked(option: str) -> Callable[[Any], Any]:
    """A typer callback checking a convert option by its preset field's rule while parsing."""

    def check(value: Any) -> Any:
        if value is None:
            return None
        from .presets import check_option

        try:
            return check_option(option, value, label="")
        except HdrvideoError as err:
            raise typer.BadParameter(str(err).strip()) from None

    return check


def _checked_time(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    from .media.decode import parse_time

    try:
        parse_time(value)
    except HdrvideoError as err:
        raise typer.BadParameter(str(err)) from None
    return value


class _LineHandler(logging.Handler):
    """Log records as ``level: message`` lines on stderr (never wrapped, never markup)."""

    _STYLES = {"WARNING": "yellow", "ERROR": "bold red", "CRITICAL": "bold red"}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = record.levelname.lower()
            stderr.print(Text.assemble((f"{level}:", self._STYLES.get(record.levelname, "dim")), " ",
                                       record.getMessage()), soft_wrap=True)
        except Exception:  # noqa: BLE001
            self.handleError(record)


class _JsonHandler(logging.Handler):
    """Log records as JSON lines on stderr: ``{"stage": "warning", "message": …}`` (``--progress json``)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno >= logging.WARNING:
                stage = "warning" if record.levelno == logging.WARNING else "error"
                event = {"stage": stage, "message": record.getMessage()}
            else:
                event = {"stage": "log", "level": record.levelname.lower(), "message": record.getMessage()}
            emit_json(event)
        except Exception:  # noqa: BLE001
            self.handleError(record)


def emit_json(event: dict[str, Any]) -> None:
    """One JSON object on one stderr line."""
    sys.stderr.write(json.dumps(event, default=str) + "\n")
    sys.stderr.flush()


def json_events() -> None:
    """From now on stderr carries only JSON lines: log records and the final error become events."""
    _state["json_events"] = True
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, (_LineHandler, _JsonHandler)):
            root.removeHandler(h)
    root.addHandler(_JsonHandler())


@app.callback()
def _main(
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Logging verbosity.")] = LogLevel.warning,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug
    _state["json_events"] = False
    signals.reset()  # a new command: nothing held, not finished
    logging.basicConfig(level=getattr(logging, log_level.value.upper()), format="%(message)s",
                        handlers=[_LineHandler()], force=True)
    # PyAV/FFmpeg logging is quiet unless debugging
    import av.logging

    # No Python log callback unless debugging: FFmpeg's worker threads calling back into Python
    # can deadlock against PyAV closing a codec while holding the GIL. Error messages come from
    # FFmpeg's error codes and are unaffected.
    av.logging.set_level(av.logging.VERBOSE if debug else None)
    # FFmpeg's own messages (e.g. "EBML header parsing failed") would add lines to our one-line
    # errors; they are shown with --debug or --log-level debug only.
    if not debug and log_level != LogLevel.debug:
        logging.getLogger("libav").setLevel(logging.CRITICAL)


def _print_error(message: str, code: int) -> int:
    signals.finish()  # the outcome is decided: a late signal must not change it
    if _state.get("json_events"):
        emit_json({"stage": "failed", "error": message, "exit_code": code})
    else:
        stderr.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)
    return code


def fail(message: str, code: int) -> typer.Exit:
    return typer.Exit(_print_error(message, code))


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn HdrvideoError/KeyboardInterrupt/anything into one line and an exit code."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except HdrvideoError as err:
            if _state["debug"]:
                stderr.print_exception()
            raise fail(str(err).splitlines()[0] if str(err) else type(err).__name__, err.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted; no partial output was left", 130) from None
        except Exception as err:  # noqa: BLE001 - the CLI never shows a raw traceback
            if _state["debug"]:
                stderr.print_exception()
            msg = str(err).splitlines()[0] if str(err) else ""
            raise fail(f"internal error: {type(err).__name__}: {msg} (run with --debug for details)", 1) from None

    return wrapper


def _sigterm_to_interrupt() -> None:
    """Docker/farm schedulers stop jobs with SIGTERM: clean up exactly as for Ctrl-C.

    :func:`main` installs SIGINT and SIGTERM handling for the whole process; this keeps callers
    of the typer app (tests, embedding) working as before."""
    import signal

    if signal.getsignal(signal.SIGTERM) is not signals.handler:
        signals.install((signal.SIGTERM,))


# --------------------------------------------------------------------------------------
# convert
# --------------------------------------------------------------------------------------

_STAGE_WORDS = {"analyse": "analysing (pass 1)", "convert": "converting", "flush": "encoder flush",
                "meter": "light metering", "mux": "muxing", "done": "done"}


def rate_text(fps: float) -> str:
    """``12.3 fps``, or seconds per frame below 1 fps (``8.4 s/frame``)."""
    if fps >= 1 or fps <= 0 or not math.isfinite(fps):
        return f"{fps:.1f} fps"
    return f"{1 / fps:.1f} s/frame"


class _Progress:
    """Progress sink: a rich bar on a TTY, JSON lines, or nothing. Identical lines are not repeated."""

    def __init__(self, mode: ProgressMode, total_hint: int = 0) -> None:
        if mode == ProgressMode.auto:
            mode = ProgressMode.bar if stderr.is_terminal else ProgressMode.none
        self.mode = mode
        self.bar = None
        self.task = None
        self._last: tuple | None = None

    def __enter__(self) -> "_Progress":
        if self.mode == ProgressMode.bar:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}", markup=False), TimeRemainingColumn(), console=stderr,
                transient=True,
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("converting", total=None, fps=0.0, rate=rate_text(0.0))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, event) -> None:
        key = (event.frame, event.total, event.stage)
        if key == self._last:
            return
        self._last = key
        if self.mode == ProgressMode.json:
            if event.stage == "done":  # the command writes the final line, with the report
                return
            emit_json({"frame": event.frame, "total": event.total, "fps": event.fps, "eta_s": event.eta_s,
                       "stage": event.stage})
        elif self.bar is not None:
            self.bar.update(self.task, completed=event.frame, total=event.total or None, fps=event.fps,
                            rate=rate_text(event.fps), description=_STAGE_WORDS.get(event.stage, event.stage))


def print_report(report, as_json: bool) -> None:
    """The final report on stdout (warnings were logged once when they happened)."""
    if as_json:
        stdout.print_json(json.dumps(report.to_dict()))
        return
    w, h = report.output_size
    stdout.print(Text.assemble(("✓", "green"), " ", str(report.output)), soft_wrap=True)
    stdout.print(
        f"  {report.frames} frames {report.input_size[0]}×{report.input_size[1]} → {w}×{h}"
        + (f" (pixel aspect {report.sample_aspect})" if report.sample_aspect else "")
        + f", {rate_text(report.fps)}, {report.seconds:.1f} s\n"
        f"  preset {report.preset}: {report.processor}; {report.encoder}\n"
        f"  MaxCLL {report.max_cll} cd/m², MaxFALL {report.max_fall} cd/m²"
        + (f"\n  input colour: {_colour_line(report.input_colour)}" if report.input_colour else ""),
        soft_wrap=True,
    )


def _colour_line(colour: dict[str, str]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in colour.items())


@app.command()
@handle_errors
def convert(
    input: Annotated[Path, typer.Argument(help="SDR video file to convert.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output .mp4/.mov/.mkv (default: INPUT.hdr10.mp4 beside the input).")] = None,
    preset: Annotated[str, typer.Option("-p", "--preset", help="Preset name (see `hdrvideo presets`) or a .toml file.")] = "bt2408",
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Weights (.safetensors/.pth) overriding the preset's.", exists=True, dir_okay=False)] = None,
    backend: Annotated[Backend, typer.Option("--backend", help="Inference backend.")] = Backend("auto"),  # type: ignore[assignment]
    device: Annotated[Optional[str], typer.Option("--device", help="cpu or cuda[:N] (default: cuda if present).")] = None,
    start: Annotated[Optional[str], typer.Option("--start", help="Start time: seconds or HH:MM:SS.ms.", callback=_checked_time)] = None,
    duration: Annotated[Optional[str], typer.Option("--duration", help="Duration: seconds or HH:MM:SS.ms.", callback=_checked_time)] = None,
    encoder: Annotated[Optional[Encoder], typer.Option("--encoder", help="HEVC encoder (default: the preset's, libx265).")] = None,  # type: ignore[valid-type]
    crf: Annotated[Optional[float], typer.Option("--crf", help="Constant quality, 0–51 (x265 CRF / NVENC CQ).", callback=checked("crf"))] = None,
    x265_preset: Annotated[Optional[X265Preset], typer.Option("--x265-preset", help="x265 speed preset.")] = None,  # type: ignore[valid-type]
    batch: Annotated[Optional[int], typer.Option("--batch", help="Frames per batch on the device (capped by a memory estimate).", callback=checked("batch"))] = None,
    tile: Annotated[Optional[int], typer.Option("--tile", help="Tile edge in input pixels for neural presets (0 = whole frame).", callback=checked("tile"))] = None,
    peak_nits: Annotated[Optional[float], typer.Option("--peak-nits", help="Peak luminance in cd/m²: the ST 2086 maximum written into the file; every preset rolls its output off to it (hdr-expand expands SDR white to it). Default: the preset's (1000).", callback=checked("peak_nits"))] = None,
    sdr_white: Annotated[Optional[float], typer.Option("--sdr-white", help="Where SDR reference white lands, cd/m² (default: the preset's, 203). Neural presets: their output is scaled by N/203 in linear light.", callback=checked("sdr_white"))] = None,
    style: Annotated[Optional[StyleName], typer.Option("--style", help="Neural presets' look: real (real HDR10 grading, HDRTV1K style) or broadcast (the ITU chain, SDR white near 203 cd/m²). Default: the preset's.")] = None,  # type: ignore[valid-type]
    deband: Annotated[Optional[DebandMode], typer.Option("--deband", help="Dequantise the source before mapping: auto (8-bit sources), on, off. Default: the preset's (auto).")] = None,  # type: ignore[valid-type]
    luma_adjust: Annotated[Optional[bool], typer.Option("--luma-adjust/--no-luma-adjust", help="Re-choose Y' at saturated edges so 4:2:0 keeps each pixel's luminance (ITU-T H.Sup15). Default: the preset's (on).")] = None,
    force: Annotated[bool, typer.Option("-f", "--force", help="Overwrite an existing output.")] = False,
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Do not copy audio streams.")] = False,
    no_subtitles: Annotated[bool, typer.Option("--no-subtitles", help="Do not copy subtitle streams.")] = False,
    light_level: Annotated[LightLevel, typer.Option("--light-level", help="Measure MaxCLL/MaxFALL on the 'decoded' output (exact) or the encoder 'input' (faster).")] = LightLevel("decoded"),  # type: ignore[assignment]
    temporal_smoothing: Annotated[TemporalSmoothing, typer.Option("--temporal-smoothing", help="auto: neural presets smooth their image statistics over time, reset at scene cuts; off: frame by frame.")] = TemporalSmoothing("auto"),  # type: ignore[assignment]
    memory_limit: Annotated[Optional[str], typer.Option("--memory-limit", callback=_memory_limit, help="Memory for the network's working set, e.g. 2G (default: 512M on the CPU, half the free GPU memory); larger frames run in exact tiles.")] = None,
    progress: Annotated[ProgressMode, typer.Option("--progress", help="Progress display; json writes one object per line to stderr.")] = ProgressMode.auto,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final report as JSON on stdout.")] = False,
    chunks: Annotated[int, typer.Option("--chunks", min=1, help="Split at keyframes into N parts, convert them in parallel, join them (1 = one piece).")] = 1,
    engine: Annotated[Engine, typer.Option("--engine", help="Where chunks run: local (process pool) or ray.")] = Engine("local"),  # type: ignore[assignment]
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="Local worker processes for --chunks (default: one per GPU, else a CPU-friendly few).")] = None,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Ray cluster address for --engine ray (default: start a local Ray).")] = None,
    work_dir: Annotated[Optional[Path], typer.Option("--work-dir", help="Where chunk files go (default: beside the output; shared storage on a Ray cluster).")] = None,
    chunk_transfer: Annotated[ChunkTransfer, typer.Option("--chunk-transfer", help="How chunks reach Ray workers: shared (files in --work-dir) or object-store.")] = ChunkTransfer("shared"),  # type: ignore[assignment]
    deinterlace: Annotated[DeinterlaceMode, typer.Option("--deinterlace", help="Deinterlace (bwdif, one frame per field): auto = when the input is interlaced; ivtc = undo 3:2 pulldown (telecined film, 29.97i → 23.976p; at other rates as fieldmatch); fieldmatch = re-pair fields into whole frames, every frame kept (progressive film a field out of step); detect = ivtc for telecined film, off for progressive film flagged interlaced, fieldmatch for film a field out of step, else auto.")] = DeinterlaceMode.auto,
    input_matrix: Annotated[Optional[InputMatrix], typer.Option("--input-matrix", help="Read the input's Y'CbCr with this matrix, whatever its tags say.")] = None,
    input_primaries: Annotated[Optional[InputPrimaries], typer.Option("--input-primaries", help="The input's colour primaries, whatever its tags say.")] = None,
    input_range: Annotated[Optional[InputRange], typer.Option("--input-range", help="The input's code range, whatever its tags say.")] = None,
    x265_params: Annotated[Optional[str], typer.Option("--x265-params", help="Extra libx265 parameters k=v:k=v (HDR10 signalling keys are refused).", rich_help_panel="Delivery")] = None,
    keyint: Annotated[Optional[str], typer.Option("--keyint", help="A keyframe exactly every N frames, or every Ns seconds (2s).", rich_help_panel="Delivery")] = None,
    closed_gop: Annotated[Optional[bool], typer.Option("--closed-gop/--open-gop", help="Closed GOPs: every keyframe an IDR, no references across it.", rich_help_panel="Delivery")] = None,
    bitrate: Annotated[Optional[str], typer.Option("--bitrate", help="Average bit rate (ABR) instead of --crf, e.g. 8M.", rich_help_panel="Delivery")] = None,
    maxrate: Annotated[Optional[str], typer.Option("--maxrate", help="VBV peak rate (with --bufsize), e.g. 10M.", rich_help_panel="Delivery")] = None,
    bufsize: Annotated[Optional[str], typer.Option("--bufsize", help="VBV buffer size in bits, e.g. 20M.", rich_help_panel="Delivery")] = None,
    two_pass: Annotated[Optional[bool], typer.Option("--two-pass/--one-pass", help="Two-pass encode to --bitrate.", rich_help_panel="Delivery")] = None,
    two_pass_cache: Annotated[TwoPassCache, typer.Option("--two-pass-cache", help="Second-pass frames: auto, planes (lossless cache on disk) or recompute.", rich_help_panel="Delivery")] = TwoPassCache("auto"),  # type: ignore[assignment]
    level: Annotated[Optional[str], typer.Option("--level", help="HEVC level, e.g. 5.1 (refused if the output cannot fit it).", rich_help_panel="Delivery")] = None,
    tier: Annotated[Optional[Tier], typer.Option("--tier", help="HEVC tier: main or high.", rich_help_panel="Delivery")] = None,  # type: ignore[valid-type]
    fragmented: Annotated[Optional[bool], typer.Option("--fragmented/--no-fragmented", help="Fragmented (CMAF-style) MP4, fragments at keyframes.", rich_help_panel="Delivery")] = None,
    audio: Annotated[Optional[AudioMode], typer.Option("--audio", help="copy (default), aac or none.", rich_help_panel="Delivery")] = None,  # type: ignore[valid-type]
    audio_bitrate: Annotated[Optional[str], typer.Option("--audio-bitrate", help="AAC bit rate, e.g. 128k (default 64k per channel).", rich_help_panel="Delivery")] = None,
    audio_streams: Annotated[Optional[str], typer.Option("--audio-streams", help="Audio streams to keep: indices or language codes (1,eng), all or none.", rich_help_panel="Delivery")] = None,
    subtitle_streams: Annotated[Optional[str], typer.Option("--subtitle-streams", help="Subtitle streams to keep: indices or language codes, all or none.", rich_help_panel="Delivery")] = None,
    crop: Annotated[Optional[str], typer.Option("--crop", help="Remove bars first: auto (detect) or W:H:X:Y.", rich_help_panel="Delivery")] = None,
    pad_back: Annotated[Optional[bool], typer.Option("--pad-back/--no-pad-back", help="Pad a cropped picture back to the full frame with black bars.", rich_help_panel="Delivery")] = None,
) -> None:
    """Convert an SDR video to HDR10 (HEVC Main10, PQ, BT.2020, ST 2086 + MaxCLL/MaxFALL)."""
    from .pipeline import ConvertOptions, Pipeline

    _sigterm_to_interrupt()
    if progress == ProgressMode.json:
        json_events()
    with _Progress(progress) as sink:
        opts = ConvertOptions(
            preset=preset, weights=str(weights) if weights else None, backend=_value(backend), device=device,
            start=start, duration=duration, encoder=_value(encoder), crf=crf, x265_preset=_value(x265_preset),
            batch=batch, tile=tile, peak_nits=peak_nits, sdr_white=sdr_white, style=_value(style), deband=_value(deband), luma_adjust=luma_adjust, force=force, copy_audio=not no_audio, copy_subtitles=not no_subtitles,
            light_level=_value(light_level), progress=sink if sink.mode != ProgressMode.none else None,
            deinterlace=_value(deinterlace), input_matrix=_value(input_matrix),
            input_primaries=_value(input_primaries), input_range=_value(input_range),
            x265_params=x265_params, keyint=keyint, closed_gop=closed_gop, bitrate=bitrate, maxrate=maxrate,
            bufsize=bufsize, two_pass=two_pass, two_pass_cache=_value(two_pass_cache), level=level, tier=_value(tier),
            fragmented=fragmented, audio=_value(audio), audio_bitrate=audio_bitrate, audio_streams=audio_streams,
            subtitle_streams=subtitle_streams, crop=crop, pad_back=pad_back,
            temporal_smoothing=_value(temporal_smoothing), memory_limit=memory_limit,
        )
        if chunks != 1 or _value(engine) != "local":
            import dataclasses

            from .farm.chunks import convert_chunked

            report = convert_chunked(
                input, output, chunks=chunks, engine=_value(engine), workers=workers, ray_address=ray_address,
                work_dir=work_dir, transfer=_value(chunk_transfer), on_commit=signals.finish,
                **{f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)},
            )
        else:
            report = Pipeline(input, output, opts).run(on_commit=signals.finish)
    if progress == ProgressMode.json:
        emit_json({"frame": report.frames, "total": report.frames, "fps": report.fps, "eta_s": 0.0,
                   "stage": "done", "report": report.to_dict()})
    print_report(report, as_json)


# --------------------------------------------------------------------------------------
# probe, presets, sample
# --------------------------------------------------------------------------------------

_PRIM_WORDS = {1: "BT.709", 5: "BT.601 PAL", 6: "BT.601 NTSC", 9: "BT.2020", 12: "Display P3"}
_TRC_WORDS = {1: "BT.709", 6: "BT.601", 13: "sRGB/sYCC", 14: "BT.2020 (10-bit)", 16: "PQ", 18: "HLG"}
_MAT_WORDS = {0: "Identity (RGB)", 1: "BT.709", 5: "BT.601", 6: "BT.601", 9: "BT.2020 non-constant", 10: "BT.2020 constant"}


def _primaries_words(prim: dict[str, tuple[float, float]]) -> str:
    from .standards import PRIMARIES

    for name, words in (("p3-d65", "Display P3"), ("bt2020", "BT.2020"), ("bt709", "BT.709")):
        p = PRIMARIES[name]
        ref = {"red": p.red, "green": p.green, "blue": p.blue, "white": p.white}
        if all(abs(prim[k][0] - ref[k][0]) < 5e-4 and abs(prim[k][1] - ref[k][1]) < 5e-4 for k in ref if k in prim):
            return words
    return ", ".join(f"{k[0].upper()}: x={v[0]:.4f} y={v[1]:.4f}" for k, v in prim.items())


def probe_lines(info) -> list[tuple[str, str]]:
    """(label, value) rows describing a file as mediainfo would."""
    rows: list[tuple[str, str]] = [("File", info.path), ("Container", info.format)]
    if info.duration:
        rows.append(("Duration", f"{info.duration:.3f} s"))
    v = info.video
    if v is not None:
        rows += [
            ("Video", f"{v.codec} {v.width}×{v.height} {v.pix_fmt}" + (f" @ {float(v.rate):.3f} fps" if v.rate else "")),
            ("Bit depth", f"{v.bit_depth} bits"),
            ("Color range", {1: "Limited", 2: "Full"}.get(v.range_tag, "unspecified")),
            ("Color primaries", _PRIM_WORDS.get(v.primaries_tag, "unspecified" if v.primaries_tag == 2 else str(v.primaries_tag))),
            ("Transfer characteristics", _TRC_WORDS.get(v.transfer_tag, "unspecified" if v.transfer_tag == 2 else str(v.transfer_tag))),
            ("Matrix coefficients", _MAT_WORDS.get(v.matrix_tag, "unspecified" if v.matrix_tag == 2 else str(v.matrix_tag))),
        ]
        if v.frames:
            rows.append(("Frame count", str(v.frames)))
        scan = _scan_words(v)
        from .media.probe import FIELD_ADVICE_MODES, field_advice, field_finding

        advice = field_advice(info.path, v)
        if advice is not None:
            scan += f"; {field_finding(*advice)}: convert with --deinterlace {FIELD_ADVICE_MODES[advice[0]]}"
        rows.append(("Scan type", scan))
        if v.pulldown:
            rows.append(("Pulldown", f"soft 3:2: film at {float(v.rate):.3f} fps shown as "
                                     f"{float(v.rate * 5 / 4):.2f}i by repeat-field flags (converted at the film rate)"))
        rows.append(("Rotation", f"{v.rotation}°" if v.rotation else "none"))
        d = v.display_aspect
        rows.append(("Pixel aspect ratio", f"{v.sample_aspect.numerator}:{v.sample_aspect.denominator}"
                     if v.sample_aspect else "1:1 (square)"))
        rows.append(("Display aspect ratio", f"{d.numerator}:{d.denominator} ({float(d):.3f})"))
        if v.captions:
            rows.append(("Closed captions", "CEA-608/708 in the video stream (kept: carried into the HEVC output as A/53 SEI)"))
        from .media.probe import colour_reading

        rows.append(("Convert reads it as", _colour_line(colour_reading(v))))
    h = info.hdr10
    if h.get("mastering_primaries"):
        rows.append(("HDR format", "SMPTE ST 2086, HDR10 compatible"))
        rows.append(("Mastering display color primaries", _primaries_words(h["mastering_primaries"])))
        rows.append(("Mastering display luminance",
                     f"min: {h['mastering_min_luminance']:.4f} cd/m2, max: {h['mastering_max_luminance']:g} cd/m2"))
    if "max_cll" in h:
        rows.append(("Maximum Content Light Level", f"{h['max_cll']} cd/m2"))
        rows.append(("Maximum Frame-Average Light Level", f"{h['max_fall']} cd/m2"))
    for s in info.streams:
        if v is None or s.index != v.index:
            what = f"{s.type} {s.codec}" + (" (cover art)" if s.cover_art else "")
            what += (f" {s.detail}" if s.detail else "") + (f" ({s.language})" if s.language else "")
            rows.append((f"Stream #{s.index}", what))
    if info.chapters:
        first = ", ".join(f"{_clock(c.start)} {c.title or '(untitled)'}" for c in info.chapters[:3])
        more = f", … ({len(info.chapters)} in all)" if len(info.chapters) > 3 else ""
        rows.append(("Chapters", first + more))
    return rows


def _clock(seconds: float) -> str:
    s = max(seconds, 0.0)
    return f"{int(s // 3600)}:{int(s // 60 % 60):02d}:{s % 60:06.3f}"


def _scan_words(v) -> str:
    order = {"tt": "top field first", "bt": "top field first (bottom coded first)", "bb": "bottom field first",
             "tb": "bottom field first (top coded first)"}.get(v.field_order)
    if order:
        return f"interlaced, {order}"
    if v.interlaced_frames:
        return "interlaced (field order per frame)"
    return "progressive" if v.field_order == "progressive" else "progressive (not flagged interlaced)"


@app.command()
@handle_errors
def probe(
    file: Annotated[Path, typer.Argument(help="Media file to describe.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    input_matrix: Annotated[Optional[InputMatrix], typer.Option("--input-matrix", help="Show how convert reads the file with this override.")] = None,
    input_primaries: Annotated[Optional[InputPrimaries], typer.Option("--input-primaries", help="Show how convert reads the file with this override.")] = None,
    input_range: Annotated[Optional[InputRange], typer.Option("--input-range", help="Show how convert reads the file with this override.")] = None,
) -> None:
    """Show colour tags and HDR10 metadata of a file, as mediainfo would report them, and how convert reads it."""
    import dataclasses

    from .media.probe import apply_colour_overrides
    from .media.probe import probe as probe_file

    info = probe_file(file)
    if info.video is not None:
        video = apply_colour_overrides(info.video, _value(input_matrix), _value(input_primaries), _value(input_range))
        info = dataclasses.replace(info, video=video)
    if as_json:
        out = info.to_dict()
        if info.video is not None:
            from .media.probe import FIELD_ADVICE_MODES, field_advice

            advice = field_advice(info.path, info.video)  # film in interlaced clothes: what to do
            out["video"]["field_advice"] = None if advice is None else {
                "kind": advice[0], "deinterlace": FIELD_ADVICE_MODES[advice[0]], **dataclasses.asdict(advice[1])}
        stdout.print_json(json.dumps(out, default=str))
        return
    rows = probe_lines(info)
    width = max(len(k) for k, _ in rows)
    for k, val in rows:
        stdout.print(f"{k:<{width}} : {val}", highlight=False, soft_wrap=True)


@app.command()
@handle_errors
def presets(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List the built-in presets."""
    from .presets import DEFAULT_PRESET, find_weights, list_presets

    items = list_presets()
    if as_json:
        stdout.print_json(json.dumps([
            {"name": p.name, "description": p.description, "processor": p.processor, "scale": p.scale,
             "arch": p.model.arch if p.model else None,
             "style": p.style or None, "styles": list(p.model.styles) if p.model else [],
             "peak_nits": p.mastering.max_luminance, "sdr_white": p.sdr_white, "deband": p.deband,
             "weights_installed": (find_weights(p) is not None) if p.model else None,
             "default": p.name == DEFAULT_PRESET}
            for p in items
        ]))
        return
    from rich.table import Table

    from rich.padding import Padding

    columns = ("preset", "scale", "network", "style", "weights", "peak", "SDR white", "description")
    rows = []
    for p in items:
        if p.processor == "neural":
            weights = "installed" if find_weights(p) is not None else "not installed (--weights)"
        else:
            weights = "-"
        name = p.name + (" (default)" if p.name == DEFAULT_PRESET else "")
        network = p.model.arch if p.model else ("chosen by input height" if p.processor == "auto" else "none")
        scale = f"×{p.scale}" if p.processor != "auto" else "auto"
        if p.processor == "auto":
            peak = white = "per pick"
        else:
            peak, white = f"{p.mastering.max_luminance:g}", f"{p.sdr_white:g}"
        others = [s for s in (p.model.styles if p.model else ()) if s != p.style]
        style = (p.style + (f" (also {', '.join(others)})" if others else "")) if p.style else "-"
        rows.append((name, scale, network, style, weights, peak, white, p.description))
    if stdout.width >= 150:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(*row)
        stdout.print(table, highlight=False)
        return
    # narrower terminals: one indented block per preset
    for name, *facts, description in rows:
        line = " · ".join(f"{col} {value}" for col, value in zip(columns[1:-1], facts))
        stdout.print(Text(name, style="bold"), highlight=False)
        stdout.print(Padding(Text(line + "\n" + description), (0, 0, 0, 2)), highlight=False)


@app.command()
@handle_errors
def sample(
    path: Annotated[Path, typer.Argument(help="Where to write the clip.")] = Path("sample.mp4"),
    size: Annotated[str, typer.Option("--size", help="WIDTHxHEIGHT (even).")] = "640x360",
    seconds: Annotated[float, typer.Option("--seconds", help="Length in seconds.")] = 4.0,
    force: Annotated[bool, typer.Option("-f", "--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write the built-in synthetic SDR sample clip (BT.709 H.264 + AAC)."""
    from .errors import OutputExistsError, UsageError
    from .media.sample import make_sample

    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size must be WIDTHxHEIGHT, got {size!r}") from None
    if w % 2 or h % 2 or w < 16 or h < 16:
        raise UsageError("--size must be even and at least 16x16")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists (use --force to overwrite)")
    make_sample(str(path), w, h, seconds)
    stdout.print(f"wrote {path}", highlight=False)


def main() -> None:
    """Console entry point.

    SIGINT and SIGTERM raise KeyboardInterrupt (exit code 130, nothing left behind) until the
    outcome is decided, and are ignored from then on. The process ends with ``os._exit`` once
    stdout and stderr are flushed: interpreter finalisation would run while daemon threads of
    C++ libraries may still exist, which can abort the process (see hdrvideo.signals).
    """
    signals.install()
    code: int = 1
    try:
        _register_optional_commands()
        app()
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        code = _print_error("interrupted; no partial output was left", 130)
    except BaseException:  # noqa: BLE001 - last resort: show it, exit 1
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        signals.finish()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    os._exit(code)


def _register_optional_commands() -> None:
    """Attach the commands that live next to their stage (models, training, backends, farm); once."""
    import importlib

    if _state.get("registered"):
        return
    _state["registered"] = True

    for module, names in (
        ("hdrvideo.models.cli", ("models",)),
        ("hdrvideo.training.cli", ("train", "eval")),
        ("hdrvideo.backends.cli", ("export", "engine", "bench")),
        ("hdrvideo.farm.cli", ("batch",)),
    ):
        try:
            mod = importlib.import_module(module)
        except ImportError as err:
            if err.name and err.name.startswith("hdrvideo"):
                continue  # stage not built yet
            raise
        if hasattr(mod, "register"):
            mod.register(app, handle_errors)
            continue
        for name in names:
            fn = getattr(mod, f"{name}_command", None)
            if fn is not None:
                app.command(name)(handle_errors(fn))


if __name__ == "__main__":
    main()
