"""The ``hdrvideo`` command line: a thin typer layer over the Python API.

Errors are one line on stderr with a documented exit code (0 ok, 1 conversion failed,
2 usage or bad input, 3 partial batch); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console

from .errors import HdrvideoError

app = typer.Typer(
    name="hdrvideo",
    help="Convert SDR (BT.709) video to HDR10 (PQ, BT.2020, HEVC Main10) with classical or neural mapping.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

stdout = Console()
stderr = Console(stderr=True)
_state: dict[str, Any] = {"debug": False}
log = logging.getLogger("hdrvideo")


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


def _value(choice: Enum | None) -> str | None:
    return None if choice is None else choice.value


@app.callback()
def _main(
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Logging verbosity.")] = LogLevel.warning,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug
    from rich.logging import RichHandler

    handler = RichHandler(console=stderr, show_time=False, show_path=False, markup=False)
    logging.basicConfig(level=getattr(logging, log_level.value.upper()), format="%(message)s", handlers=[handler], force=True)
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


def fail(message: str, code: int) -> typer.Exit:
    stderr.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


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
            raise fail("interrupted; no output was written", 130) from None
        except Exception as err:  # noqa: BLE001 - the CLI never shows a raw traceback
            if _state["debug"]:
                stderr.print_exception()
            msg = str(err).splitlines()[0] if str(err) else ""
            raise fail(f"internal error: {type(err).__name__}: {msg} (run with --debug for details)", 1) from None

    return wrapper


def _sigterm_to_interrupt() -> None:
    """Docker/farm schedulers stop jobs with SIGTERM: clean up exactly as for Ctrl-C."""

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread (embedded use)
        pass


# --------------------------------------------------------------------------------------
# convert
# --------------------------------------------------------------------------------------


class _Progress:
    """Progress sink: a rich bar on a TTY, JSON lines, or nothing."""

    def __init__(self, mode: ProgressMode, total_hint: int = 0) -> None:
        if mode == ProgressMode.auto:
            mode = ProgressMode.bar if stderr.is_terminal else ProgressMode.none
        self.mode = mode
        self.bar = None
        self.task = None

    def __enter__(self) -> "_Progress":
        if self.mode == ProgressMode.bar:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[fps]:.1f} fps"), TimeRemainingColumn(), console=stderr, transient=True,
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("converting", total=None, fps=0.0)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, event) -> None:
        if self.mode == ProgressMode.json:
            sys.stderr.write(json.dumps({"frame": event.frame, "total": event.total, "fps": event.fps,
                                         "eta_s": event.eta_s, "stage": event.stage}) + "\n")
            sys.stderr.flush()
        elif self.bar is not None:
            self.bar.update(self.task, completed=event.frame, total=event.total or None, fps=event.fps,
                            description={"mux": "muxing", "analyse": "analysing (pass 1)"}.get(event.stage, "converting"))


def print_report(report, as_json: bool) -> None:
    if as_json:
        stdout.print_json(json.dumps(report.to_dict()))
        return
    w, h = report.output_size
    stdout.print(
        f"[green]✓[/] {report.output}\n"
        f"  {report.frames} frames {report.input_size[0]}×{report.input_size[1]} → {w}×{h}, "
        f"{report.fps:.2f} fps, {report.seconds:.1f} s\n"
        f"  preset {report.preset}: {report.processor}; {report.encoder}\n"
        f"  MaxCLL {report.max_cll} cd/m², MaxFALL {report.max_fall} cd/m²"
        + (f"\n  input colour: {_colour_line(report.input_colour)}" if report.input_colour else ""),
        highlight=False,
    )
    for w_ in report.warnings:
        stderr.print(f"[yellow]warning:[/] {w_}", highlight=False)


def _colour_line(colour: dict[str, str]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in colour.items())


@app.command()
@handle_errors
def convert(
    input: Annotated[Path, typer.Argument(help="SDR video file to convert.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output .mp4/.mov/.mkv (default: INPUT.hdr10.mp4 beside the input).")] = None,
    preset: Annotated[str, typer.Option("-p", "--preset", help="Preset name (see `hdrvideo presets`) or a .toml file.")] = "bt2408",
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Weights (.safetensors/.pth) overriding the preset's.")] = None,
    backend: Annotated[str, typer.Option("--backend", help="auto, torch, onnxruntime or tensorrt.")] = "auto",
    device: Annotated[Optional[str], typer.Option("--device", help="cpu or cuda[:N] (default: cuda if present).")] = None,
    start: Annotated[Optional[str], typer.Option("--start", help="Start time: seconds or HH:MM:SS.ms.")] = None,
    duration: Annotated[Optional[str], typer.Option("--duration", help="Duration: seconds or HH:MM:SS.ms.")] = None,
    encoder: Annotated[Optional[str], typer.Option("--encoder", help="libx265 (default) or hevc_nvenc.")] = None,
    crf: Annotated[Optional[float], typer.Option("--crf", help="Constant quality (x265 CRF / NVENC CQ).")] = None,
    x265_preset: Annotated[Optional[str], typer.Option("--x265-preset", help="x265 speed preset (ultrafast … placebo).")] = None,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Frames per batch on the device.")] = None,
    tile: Annotated[Optional[int], typer.Option("--tile", help="Tile edge in input pixels for neural presets (0 = whole frame).")] = None,
    force: Annotated[bool, typer.Option("-f", "--force", help="Overwrite an existing output.")] = False,
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Do not copy audio streams.")] = False,
    no_subtitles: Annotated[bool, typer.Option("--no-subtitles", help="Do not copy subtitle streams.")] = False,
    light_level: Annotated[str, typer.Option("--light-level", help="Measure MaxCLL/MaxFALL on the 'decoded' output (exact) or the encoder 'input' (faster).")] = "decoded",
    progress: Annotated[ProgressMode, typer.Option("--progress", help="Progress display; json writes one object per line to stderr.")] = ProgressMode.auto,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final report as JSON on stdout.")] = False,
    chunks: Annotated[int, typer.Option("--chunks", help="Split at keyframes into N parts, convert them in parallel, join them (1 = one piece).")] = 1,
    engine: Annotated[str, typer.Option("--engine", help="Where chunks run: local (process pool) or ray.")] = "local",
    workers: Annotated[Optional[int], typer.Option("--workers", help="Local worker processes for --chunks (default: one per GPU, else a CPU-friendly few).")] = None,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Ray cluster address for --engine ray (default: start a local Ray).")] = None,
    work_dir: Annotated[Optional[Path], typer.Option("--work-dir", help="Where chunk files go (default: beside the output; shared storage on a Ray cluster).")] = None,
    chunk_transfer: Annotated[str, typer.Option("--chunk-transfer", help="How chunks reach Ray workers: shared (files in --work-dir) or object-store.")] = "shared",
    deinterlace: Annotated[DeinterlaceMode, typer.Option("--deinterlace", help="Deinterlace (bwdif, one frame per field): auto = when the input is interlaced.")] = DeinterlaceMode.auto,
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
    two_pass_cache: Annotated[str, typer.Option("--two-pass-cache", help="Second-pass frames: auto, planes (lossless cache on disk) or recompute.", rich_help_panel="Delivery")] = "auto",
    level: Annotated[Optional[str], typer.Option("--level", help="HEVC level, e.g. 5.1 (refused if the output cannot fit it).", rich_help_panel="Delivery")] = None,
    tier: Annotated[Optional[str], typer.Option("--tier", help="HEVC tier: main or high.", rich_help_panel="Delivery")] = None,
    fragmented: Annotated[Optional[bool], typer.Option("--fragmented/--no-fragmented", help="Fragmented (CMAF-style) MP4, fragments at keyframes.", rich_help_panel="Delivery")] = None,
    audio: Annotated[Optional[str], typer.Option("--audio", help="copy (default), aac or none.", rich_help_panel="Delivery")] = None,
    audio_bitrate: Annotated[Optional[str], typer.Option("--audio-bitrate", help="AAC bit rate, e.g. 128k (default 64k per channel).", rich_help_panel="Delivery")] = None,
    audio_streams: Annotated[Optional[str], typer.Option("--audio-streams", help="Audio streams to keep: indices or language codes (1,eng), all or none.", rich_help_panel="Delivery")] = None,
    subtitle_streams: Annotated[Optional[str], typer.Option("--subtitle-streams", help="Subtitle streams to keep: indices or language codes, all or none.", rich_help_panel="Delivery")] = None,
    crop: Annotated[Optional[str], typer.Option("--crop", help="Remove bars first: auto (detect) or W:H:X:Y.", rich_help_panel="Delivery")] = None,
    pad_back: Annotated[Optional[bool], typer.Option("--pad-back/--no-pad-back", help="Pad a cropped picture back to the full frame with black bars.", rich_help_panel="Delivery")] = None,
) -> None:
    """Convert an SDR video to HDR10 (HEVC Main10, PQ, BT.2020, ST 2086 + MaxCLL/MaxFALL)."""
    from .pipeline import ConvertOptions, Pipeline

    _sigterm_to_interrupt()
    with _Progress(progress) as sink:
        opts = ConvertOptions(
            preset=preset, weights=str(weights) if weights else None, backend=backend, device=device,
            start=start, duration=duration, encoder=encoder, crf=crf, x265_preset=x265_preset, batch=batch,
            tile=tile, force=force, copy_audio=not no_audio, copy_subtitles=not no_subtitles, light_level=light_level,
            progress=sink if sink.mode != ProgressMode.none else None, deinterlace=deinterlace.value,
            input_matrix=_value(input_matrix), input_primaries=_value(input_primaries), input_range=_value(input_range),
            x265_params=x265_params, keyint=keyint, closed_gop=closed_gop, bitrate=bitrate, maxrate=maxrate,
            bufsize=bufsize, two_pass=two_pass, two_pass_cache=two_pass_cache, level=level, tier=tier,
            fragmented=fragmented, audio=audio, audio_bitrate=audio_bitrate, audio_streams=audio_streams,
            subtitle_streams=subtitle_streams, crop=crop, pad_back=pad_back,
        )
        if chunks != 1 or engine != "local":
            import dataclasses

            from .farm.chunks import convert_chunked

            report = convert_chunked(
                input, output, chunks=chunks, engine=engine, workers=workers, ray_address=ray_address,
                work_dir=work_dir, transfer=chunk_transfer,
                **{f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)},
            )
        else:
            report = Pipeline(input, output, opts).run()
    if progress == ProgressMode.json:
        sys.stderr.write(json.dumps({"frame": report.frames, "total": report.frames, "fps": report.fps, "eta_s": 0.0,
                                     "stage": "done", "report": report.to_dict()}) + "\n")
    print_report(report, as_json)


# --------------------------------------------------------------------------------------
# probe, presets, sample
# --------------------------------------------------------------------------------------

_PRIM_WORDS = {1: "BT.709", 5: "BT.601 PAL", 6: "BT.601 NTSC", 9: "BT.2020", 12: "Display P3"}
_TRC_WORDS = {1: "BT.709", 6: "BT.601", 13: "sRGB/sYCC", 14: "BT.2020 (10-bit)", 16: "PQ", 18: "HLG"}
_MAT_WORDS = {0: "Identity (RGB)", 1: "BT.709", 5: "BT.601", 6: "BT.601", 9: "BT.2020 non-constant", 10: "BT.2020 constant"}


def _primaries_words(prim: dict[str, tuple[float, float]]) -> str:
    from .colour import PRIMARIES

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
        rows.append(("Scan type", _scan_words(v)))
        rows.append(("Rotation", f"{v.rotation}°" if v.rotation else "none"))
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
    return rows


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
        stdout.print_json(json.dumps(info.to_dict(), default=str))
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
             "weights_installed": (find_weights(p) is not None) if p.model else None,
             "default": p.name == DEFAULT_PRESET}
            for p in items
        ]))
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("preset", "scale", "network", "weights", "description"):
        table.add_column(col, overflow="fold")
    for p in items:
        if p.processor == "neural":
            weights = "installed" if find_weights(p) is not None else "not installed (--weights)"
        else:
            weights = "-"
        name = p.name + (" (default)" if p.name == DEFAULT_PRESET else "")
        network = p.model.arch if p.model else ("chosen by input height" if p.processor == "auto" else "none")
        scale = f"×{p.scale}" if p.processor != "auto" else "auto"
        table.add_row(name, scale, network, weights, p.description)
    stdout.print(table, highlight=False)


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
    """Console entry point."""
    _register_optional_commands()
    app()


def _register_optional_commands() -> None:
    """Attach the commands that live next to their stage (models, training, backends, farm)."""
    import importlib

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
