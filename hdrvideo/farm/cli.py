"""``hdrvideo batch``: many conversions with a state file, resume, a summary (table or JSON).

Attached to the main app by :func:`hdrvideo.cli._register_optional_commands` via :func:`register`.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from ..cli import Encoder, ProgressMode, X265Preset, checked

__all__ = ["register", "batch_command", "EngineName", "parse_option_pairs"]


class EngineName(str, Enum):
    local = "local"
    ray = "ray"


def parse_option_pairs(pairs: list[str] | None) -> dict[str, Any]:
    """``["crf=20", "copy_audio=false"]`` → ``{"crf": 20, "copy_audio": False}`` (JSON values)."""
    from ..errors import UsageError

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--option takes KEY=VALUE, got {pair!r}")
        text = value.strip()
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = {"true": True, "false": False}.get(text.lower(), text)
    return out


class _BatchProgress:
    """Batch events → JSON lines on stderr, a rich bar (jobs done of total), or nothing."""

    def __init__(self, mode: str, total: int) -> None:
        from ..cli import stderr

        self.console = stderr
        if mode == "auto":
            mode = "bar" if stderr.is_terminal else "none"
        self.mode = mode
        self.total = total
        self.bar = None
        self.task = None
        self.finished = 0

    def __enter__(self) -> "_BatchProgress":
        if self.mode == "bar":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=self.console, transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task("jobs", total=self.total)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, event: dict[str, Any]) -> None:
        if self.mode == "json":
            sys.stderr.write(json.dumps(event, default=str) + "\n")
            sys.stderr.flush()
        elif self.bar is not None:
            stage = event.get("stage")
            if stage in ("done", "failed", "skipped"):
                self.finished += 1
                self.bar.update(self.task, completed=self.finished)
            elif stage == "start":
                self.bar.update(self.task, description=f"job {event['job'] + 1}: {Path(event['input']).name}")


def print_summary(summary, as_json: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    from ..cli import stdout

    if as_json:
        stdout.print_json(json.dumps(summary.to_dict(), default=str))
        return
    table = Table(title=f"hdrvideo batch: {summary.count('done')} done, {summary.count('skipped')} skipped, "
                        f"{summary.count('failed')} failed", title_justify="left")
    # On a terminal long names are shortened to fit; into a pipe or file nothing is cut.
    tty = stdout.is_terminal
    short = {"no_wrap": True, "overflow": "ellipsis" if tty else "fold"}
    name_width = {"max_width": 32} if tty else {}
    for col, kw in (("#", {"justify": "right"}), ("input", name_width), ("output", name_width),
                    ("status", {}), ("frames", {"justify": "right"}), ("fps", {"justify": "right"}),
                    ("MaxCLL", {"justify": "right"}), ("MaxFALL", {"justify": "right"})):
        table.add_column(col, **short, **kw)
    colours = {"done": "green", "skipped": "cyan", "failed": "red"}
    for j in summary.jobs:
        r = j.report or {}
        table.add_row(
            str(j.index + 1), Path(j.input).name, Path(j.output).name,
            Text(j.status, style=colours.get(j.status, "white")),
            str(r.get("frames", "")), f"{r['fps']:.1f}" if r.get("fps") else "",
            str(r.get("max_cll", "")), str(r.get("max_fall", "")),
        )
    if tty:
        stdout.print(table)
    else:
        from rich.console import Console

        # Console.print never goes wider than the console (80 columns into a pipe): print
        # through a console exactly as wide as the table wants
        width = stdout.measure(table, options=stdout.options.update_width(100_000)).maximum
        Console(file=stdout.file, width=max(width, 20), no_color=stdout.no_color).print(table)
    for j in summary.jobs:
        if j.status == "failed":
            stdout.print(Text.assemble(("failed", "red"), f" #{j.index + 1} {j.input}: {j.reason}"), soft_wrap=True)
    stdout.print(f"state: {summary.state_file}", highlight=False, soft_wrap=True)


def batch_command(
    manifest: Annotated[Optional[Path], typer.Argument(help="CSV (header: input,output,preset,options) or JSONL manifest, one job per line.", show_default=False)] = None,
    input_dir: Annotated[Optional[Path], typer.Option("--input-dir", help="Convert every video file of this directory.")] = None,
    output_dir: Annotated[Optional[Path], typer.Option("--output-dir", help="Where --input-dir outputs go (NAME.hdr10.EXT); also the default for manifest rows without an output.")] = None,
    preset: Annotated[str, typer.Option("-p", "--preset", help="Preset for jobs that name none.")] = "bt2408",
    recursive: Annotated[bool, typer.Option("--recursive", help="With --input-dir: include sub-directories (mirrored in --output-dir).")] = False,
    workers: Annotated[int, typer.Option("-w", "--workers", help="Jobs run at once (one worker process each).")] = 1,
    engine: Annotated[EngineName, typer.Option("--engine", help="local process pool or ray tasks.")] = EngineName.local,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Ray cluster address (default: start a local Ray).")] = None,
    state: Annotated[Optional[Path], typer.Option("--state", help="State file (default: MANIFEST.state.json, or OUTPUT_DIR/.hdrvideo-batch.state.json).")] = None,
    force: Annotated[bool, typer.Option("-f", "--force", help="Overwrite existing outputs this batch did not write.")] = False,
    crf: Annotated[Optional[float], typer.Option("--crf", help="Constant quality (0–51) for jobs that set none.", callback=checked("crf"))] = None,
    x265_preset: Annotated[Optional[X265Preset], typer.Option("--x265-preset", help="x265 speed preset for jobs that set none.")] = None,  # type: ignore[valid-type]
    encoder: Annotated[Optional[Encoder], typer.Option("--encoder", help="libx265 or hevc_nvenc for jobs that set none.")] = None,  # type: ignore[valid-type]
    device: Annotated[Optional[str], typer.Option("--device", help="cpu or cuda[:N] for jobs that set none.")] = None,
    option: Annotated[Optional[list[str]], typer.Option("-O", "--option", help="KEY=VALUE convert option for every job (JSON value), e.g. -O copy_subtitles=false. Repeatable.")] = None,
    progress: Annotated[ProgressMode, typer.Option("--progress", help="Progress display; json writes one object per line to stderr.")] = ProgressMode.auto,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Convert many files; rerun to resume (finished jobs are skipped, failed ones retried).

    Exit codes: 0 every job done or skipped; 3 some jobs failed (reasons in the summary); 2 bad usage or manifest; 1 internal error.
    """
    from ..cli import _sigterm_to_interrupt, json_events
    from ..errors import UsageError
    from .batch import default_state_path, jobs_from_dir, load_manifest, run_batch

    options = parse_option_pairs(option)
    x265_preset, encoder = (x265_preset.value if x265_preset else None), (encoder.value if encoder else None)
    for key, value in (("crf", crf), ("x265_preset", x265_preset), ("encoder", encoder), ("device", device)):
        if value is not None:
            options.setdefault(key, value)
    if manifest is not None and input_dir is not None:
        raise UsageError("give a MANIFEST or --input-dir, not both")
    if manifest is not None:
        jobs = load_manifest(manifest, {"preset": preset, "options": options,
                                        "output_dir": str(output_dir) if output_dir else None})
    elif input_dir is not None:
        if output_dir is None:
            raise UsageError("--input-dir needs --output-dir")
        jobs = jobs_from_dir(input_dir, output_dir, preset, options, recursive)
    else:
        raise UsageError("give a MANIFEST or --input-dir D --output-dir O")
    if workers < 1:
        raise UsageError("--workers must be ≥ 1")
    state_path = state or default_state_path(manifest, output_dir)
    _sigterm_to_interrupt()
    if progress == ProgressMode.json:
        json_events()
    with _BatchProgress(progress.value, len(jobs)) as sink:
        summary = run_batch(jobs, state_path, engine=engine.value, workers=workers, ray_address=ray_address,
                            force=force, on_event=sink if sink.mode != "none" else None)
    if progress == ProgressMode.json:
        sys.stderr.write(json.dumps({"stage": "summary", **{k: v for k, v in summary.to_dict().items() if k != "jobs"}})
                         + "\n")
    print_summary(summary, as_json)
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)


def register(app: typer.Typer, handle_errors: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Attach ``batch`` to the main app."""
    app.command("batch")(handle_errors(batch_command))
