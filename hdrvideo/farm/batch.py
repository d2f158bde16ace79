"""Batch jobs with resume: a manifest (or a directory) of conversions, a state file, a summary.

* **Jobs** come from a CSV or JSONL manifest (one job per row/line: ``input``, ``output``,
  ``preset``, ``options``; relative paths are relative to the manifest) or from
  ``--input-dir`` / ``--output-dir`` (every video file; outputs named ``NAME.hdr10.EXT``).
  ``options`` is a JSON object of :class:`~hdrvideo.pipeline.ConvertOptions` fields (in a CSV
  a JSON string); any other column or key named like an option is an option too.
* **State**: a JSON file (written atomically: temporary file + rename) keyed by output path
  records each job's settings fingerprint, status (``running``/``done``/``failed``), attempts,
  error and report. One batch at a time may use a state file (a lock file beside it while
  the batch runs, removed when it ends).
* **Resume**: a rerun skips jobs recorded ``done`` with the same settings whose output still
  checks out: it has the recorded byte size, probes as HEVC of the recorded frame size, and
  every video packet the recorded frame count names can be read to the end of the file (the
  packets are counted by demuxing, not taken from the header, so a truncated file is found);
  everything else — failed, interrupted (``running`` when the batch was killed), never
  started — runs.
  The batch owns the outputs its state file records, so it overwrites those (and removes the
  temporary directory a killed worker left beside them); any other existing output is only
  overwritten with ``--force``.
* **Isolation**: every job runs in a worker process; a bad input, a failing encoder or a
  killed worker fails that job only, with the reason in the summary. Exit code 3 when any
  job failed. A worker's warnings come back to the driver, which logs them once, prefixed
  with the job they belong to (``job 2 (reel2.mov): …``).
"""

from __future__ import annotations

import csv
import datetime as _dt
import glob
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import HdrvideoError, OutputExistsError, UsageError
from .engines import Engine, make_engine
from ..fsutil import ExclusiveLock, atomic_write_bytes

__all__ = [
    "Job",
    "JobResult",
    "BatchSummary",
    "BatchState",
    "load_manifest",
    "jobs_from_dir",
    "check_output",
    "run_batch",
    "VIDEO_EXTENSIONS",
    "PARTIAL_EXIT_CODE",
]

log = logging.getLogger(__name__)

PARTIAL_EXIT_CODE = 3
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mxf", ".ts", ".m2ts", ".mts", ".mpg",
                    ".mpeg", ".wmv", ".flv", ".y4m", ".3gp")


# --------------------------------------------------------------------------------------
# jobs
# --------------------------------------------------------------------------------------


@dataclass
class Job:
    """One conversion of a batch (also usable alone: ``Job("a.mp4", "b.mp4").run()``)."""

    input: str
    output: str | None = None
    preset: str = "bt2408"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from ..pipeline import default_output

        self.input = str(self.input)
        self.output = str(self.output) if self.output else str(default_output(self.input))

    @property
    def key(self) -> str:
        """The job's identity in the state file: its absolute output path."""
        return os.path.abspath(self.output or "")

    def fingerprint(self) -> str:
        """Hash of everything that decides the output's content."""
        doc = {"input": os.path.abspath(self.input), "preset": self.preset, "options": self.options}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def run(self, progress: Callable[[Any], None] | None = None, force: bool = False):
        """Convert now, in this process; returns the :class:`~hdrvideo.pipeline.Report`."""
        from ..pipeline import ConvertOptions, Pipeline

        opts = dict(self.options)
        chunks = int(opts.pop("chunks", 1) or 1)
        if force:
            opts["force"] = True
        if chunks > 1:
            from .chunks import convert_chunked

            return convert_chunked(self.input, self.output, self.preset, chunks=chunks, workers=1,
                                   progress=progress, **opts)
        return Pipeline(self.input, self.output, ConvertOptions(preset=self.preset, progress=progress), **opts).run()


def _coerce(value: Any) -> Any:
    """CSV cells are text: numbers, booleans and JSON become values; empty cells are None."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text == "":
        return None
    low = text.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    try:
        return json.loads(text)
    except ValueError:
        return text


def _job_from_record(rec: dict[str, Any], where: str, base: Path, defaults: dict[str, Any]) -> Job:
    rec = {str(k).strip().lower().replace("-", "_"): v for k, v in rec.items() if k is not None}
    src = rec.pop("input", None)
    if not src or not str(src).strip():
        raise UsageError(f"{where}: no input")
    out = rec.pop("output", None)
    preset = rec.pop("preset", None) or defaults.get("preset") or "bt2408"
    options = dict(defaults.get("options") or {})
    raw = rec.pop("options", None)
    if isinstance(raw, str) and raw.strip():
        try:
            raw = json.loads(raw)
        except ValueError as err:
            raise UsageError(f"{where}: options is not a JSON object ({err})") from None
    if raw:
        if not isinstance(raw, dict):
            raise UsageError(f"{where}: options must be a JSON object")
        options.update({str(k).strip().replace("-", "_"): v for k, v in raw.items()})
    for key, value in rec.items():  # other columns: options by name (an unknown one fails its job)
        value = _coerce(value)
        if value is not None:
            options[key] = value

    def resolve(p: Any) -> str:
        path = Path(str(p).strip()).expanduser()
        return str(path if path.is_absolute() else base / path)

    src_path = resolve(src)
    if out:
        out_path = resolve(out)
    elif defaults.get("output_dir"):
        from ..pipeline import default_output

        out_path = str(Path(defaults["output_dir"]) / default_output(src_path).name)
    else:
        out_path = None
    return Job(src_path, out_path, str(preset), options)


def load_manifest(path: str | os.PathLike[str], defaults: dict[str, Any] | None = None) -> list[Job]:
    """Jobs of a CSV (header row required) or JSONL manifest. Malformed lines are usage errors."""
    path = Path(path)
    defaults = defaults or {}
    if not path.is_file():
        raise UsageError(f"manifest not found: {path}")
    base = path.resolve().parent
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read manifest {path}: {err}") from None
    jobs = []
    suffix = path.suffix.lower()
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if suffix in (".jsonl", ".ndjson", ".json") or first.startswith("{"):
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                rec = json.loads(line)
            except ValueError as err:
                raise UsageError(f"{path}:{n}: invalid JSON ({err})") from None
            if not isinstance(rec, dict):
                raise UsageError(f"{path}:{n}: each line must be a JSON object")
            jobs.append(_job_from_record(rec, f"{path}:{n}", base, defaults))
    else:
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        reader = csv.DictReader(lines)
        if not reader.fieldnames or "input" not in [f.strip().lower() for f in reader.fieldnames]:
            raise UsageError(f"{path}: a CSV manifest needs a header row with an 'input' column")
        for n, rec in enumerate(reader, 2):
            if None in rec:
                raise UsageError(f"{path}: row {n} has more cells than the header")
            jobs.append(_job_from_record(rec, f"{path}: row {n}", base, defaults))
    if not jobs:
        raise UsageError(f"manifest {path} has no jobs")
    return jobs


def jobs_from_dir(input_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str], preset: str = "bt2408",
                  options: dict[str, Any] | None = None, recursive: bool = False) -> list[Job]:
    """One job per video file of ``input_dir`` (sorted); outputs mirror sub-directories."""
    from ..pipeline import default_output

    src = Path(input_dir)
    dst = Path(output_dir)
    if not src.is_dir():
        raise UsageError(f"input directory not found: {src}")
    files = sorted(p for p in (src.rglob("*") if recursive else src.iterdir())
                   if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith(".")
                   and ".hdr10." not in p.name)
    jobs = []
    for p in files:
        rel = p.relative_to(src)
        out = dst / rel.parent / default_output(p).name
        jobs.append(Job(str(p), str(out), preset, dict(options or {})))
    if not jobs:
        raise UsageError(f"no video files in {src}")
    return jobs


# --------------------------------------------------------------------------------------
# state
# --------------------------------------------------------------------------------------


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class BatchState:
    """The JSON state file; one writer (the batch driver), atomic replacement on every save."""

    VERSION = 1

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = ExclusiveLock(str(self.path) + ".lock")
        if not self._lock.acquire():
            raise UsageError(f"another batch is using the state file {self.path}")
        self.jobs: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                doc = json.loads(self.path.read_text())
                self.jobs = dict(doc.get("jobs", {}))
            except (OSError, ValueError, AttributeError) as err:
                backup = self.path.with_name(self.path.name + ".corrupt")
                log.warning("state file %s is unreadable (%s); starting afresh (kept as %s)", self.path, err, backup)
                try:
                    shutil.copyfile(self.path, backup)
                except OSError:
                    pass

    def save(self) -> None:
        doc = {"version": self.VERSION, "updated": _now(), "jobs": self.jobs}
        data = json.dumps(doc, indent=1, sort_keys=True, default=str).encode()
        atomic_write_bytes(self.path, data)

    def close(self) -> None:
        self._lock.release()

    def __enter__(self) -> "BatchState":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def default_state_path(manifest: str | os.PathLike[str] | None, output_dir: str | os.PathLike[str] | None) -> Path:
    if manifest is not None:
        m = Path(manifest)
        return m.with_name(m.name + ".state.json")
    if output_dir is None:
        raise UsageError("give --state, a manifest or --output-dir")
    return Path(output_dir) / ".hdrvideo-batch.state.json"


# --------------------------------------------------------------------------------------
# checking an output
# --------------------------------------------------------------------------------------


def _readable_packets(path: str) -> tuple[int, int]:
    """(whole video packets, damaged packets of any stream) read by demuxing the file to its end.

    A packet the demuxer could only read in part (the file ends inside it) is flagged corrupt
    and counts as damaged, not as a video packet.
    """
    import av

    video = damaged = 0
    with av.open(path) as c:
        index = c.streams.video[0].index
        for p in c.demux():
            if not p.size:
                continue
            if p.is_corrupt:
                damaged += 1
            elif p.stream.index == index:
                video += 1
    return video, damaged


def check_output(path: str, report: dict[str, Any] | None, size: int | None = None) -> str | None:
    """None if ``path`` is a finished output matching ``report`` (and ``size`` bytes), else why not."""
    if not os.path.isfile(path):
        return "the output is missing"
    if size is not None and os.path.getsize(path) != size:
        return f"the output has {os.path.getsize(path)} bytes, not the {size} it had when it was written"
    from ..media.probe import probe

    try:
        info = probe(path)
    except HdrvideoError as err:
        return f"the output is unreadable ({err})"
    v = info.video
    if v is None or v.codec != "hevc":
        return "the output has no HEVC video"
    if report:
        size = tuple(report.get("output_size") or ())
        if size and (v.width, v.height) != size:
            return f"the output is {v.width}×{v.height}, not {size[0]}×{size[1]}"
        frames = report.get("frames")
        if frames:
            try:
                got, damaged = _readable_packets(path)
            except Exception as err:  # noqa: BLE001
                return f"the output cannot be read to the end ({err})"
            if damaged:
                return f"the output is damaged or truncated ({damaged} packet(s) cut short)"
            if got != frames:
                return f"the output has {got} readable frames, not {frames}"
    return None


# --------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------


@dataclass
class JobResult:
    index: int
    input: str
    output: str
    status: str  # done, skipped, failed
    reason: str = ""
    exit_code: int = 0
    attempts: int = 0
    report: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BatchSummary:
    jobs: list[JobResult]
    state_file: str
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for j in self.jobs if j.status == status)

    @property
    def exit_code(self) -> int:
        return PARTIAL_EXIT_CODE if self.count("failed") else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": len(self.jobs), "done": self.count("done"), "skipped": self.count("skipped"),
            "failed": self.count("failed"), "exit_code": self.exit_code, "state_file": self.state_file,
            "seconds": round(self.seconds, 3), "jobs": [j.to_dict() for j in self.jobs],
        }


class _ForwardWarnings(logging.Handler):
    """In a worker: hdrvideo's warnings go to the driver (which says which job) instead of stderr."""

    def __init__(self, send: Callable[[Any], None]) -> None:
        super().__init__(logging.WARNING)
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.send({"stage": "warning", "message": record.getMessage()})
        except Exception:  # noqa: BLE001 - a warning must never fail the job
            pass


def _run_job(item: dict[str, Any], progress: Callable[[Any], None]) -> dict[str, Any]:
    """Worker side of one batch job: convert, return the report as a dict (errors propagate)."""
    job = Job(item["input"], item["output"], item["preset"], item["options"])
    Path(job.output).parent.mkdir(parents=True, exist_ok=True)

    def forward(event) -> None:
        progress({"frame": event.frame, "total": event.total, "fps": event.fps, "eta_s": event.eta_s,
                  "stage": event.stage})

    if os.getpid() == item.get("driver_pid"):  # run in the driver's process: its logging applies
        return job.run(progress=forward, force=item["force"]).to_dict()
    logger = logging.getLogger("hdrvideo")
    handler = _ForwardWarnings(progress)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False  # not also on the worker's stderr
    try:
        report = job.run(progress=forward, force=item["force"])
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    return report.to_dict()


def _job_label(i: int, job: Job) -> str:
    return f"job {i + 1} ({Path(job.input).name})"


def _remove_stale_temp(output: str) -> None:
    """Temporary directories a killed conversion of ``output`` left beside it."""
    out = Path(output)
    for pattern in (f".{out.name}.*.hdrvideo-tmp", f".{out.name}.*.hdrvideo-chunks"):
        for d in glob.glob(os.path.join(glob.escape(str(out.parent)), pattern)):
            shutil.rmtree(d, ignore_errors=True)


def _reason(err: BaseException | None) -> tuple[str, int]:
    if err is None:
        return "failed", 1
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    if not isinstance(err, HdrvideoError):
        msg = f"internal error: {type(err).__name__}: {msg}"
    return msg, int(getattr(err, "exit_code", 1))


def run_batch(
    jobs: list[Job],
    state_file: str | os.PathLike[str],
    *,
    engine: str | Engine = "local",
    workers: int = 1,
    ray_address: str | None = None,
    force: bool = False,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> BatchSummary:
    """Run ``jobs`` (skipping finished ones recorded in ``state_file``) and summarise.

    ``on_event`` receives dicts: ``{"job": i, "stage": "start"|"convert"|"mux"|"done"|"failed"|
    "skipped", ...}`` (``convert`` events carry frame/total/fps/eta_s).
    """
    t0 = time.perf_counter()
    seen: dict[str, int] = {}
    for i, job in enumerate(jobs):
        if job.key in seen:
            raise UsageError(f"jobs {seen[job.key] + 1} and {i + 1} write the same output {job.output}")
        seen[job.key] = i
    emit = on_event or (lambda _e: None)
    results: list[JobResult | None] = [None] * len(jobs)
    with BatchState(state_file) as state:
        todo: list[int] = []
        for i, job in enumerate(jobs):
            entry = state.jobs.get(job.key)
            fp = job.fingerprint()
            if entry and entry.get("status") == "done" and entry.get("fingerprint") == fp:
                why = check_output(job.output, entry.get("report"), entry.get("bytes"))
                if why is None:
                    results[i] = JobResult(i, job.input, job.output, "skipped", "already done",
                                           attempts=int(entry.get("attempts", 1)), report=entry.get("report"))
                    emit({"job": i, "input": job.input, "output": job.output, "stage": "skipped"})
                    continue
                log.warning("%s: done in an earlier run but %s; converting again", _job_label(i, job), why)
            owned = entry is not None
            if owned:
                _remove_stale_temp(job.output)
            if os.path.exists(job.output) and not (force or owned):
                err = OutputExistsError(f"output exists: {job.output} (not written by this batch; use --force)")
                results[i] = JobResult(i, job.input, job.output, "failed", str(err), err.exit_code)
                emit({"job": i, "input": job.input, "output": job.output, "stage": "failed", "error": str(err)})
                continue
            state.jobs[job.key] = {
                "input": os.path.abspath(job.input), "output": job.key, "preset": job.preset, "options": job.options,
                "fingerprint": fp, "status": "pending", "attempts": int((entry or {}).get("attempts", 0)),
                "error": None, "report": None, "started": None, "finished": None,
            }
            todo.append(i)
        state.save()

        items = [{"input": jobs[i].input, "output": jobs[i].output, "preset": jobs[i].preset,
                  "options": jobs[i].options, "force": True, "driver_pid": os.getpid()} for i in todo]

        def on_start(k: int) -> None:
            job = jobs[todo[k]]
            entry = state.jobs[job.key]
            entry.update(status="running", started=_now(), attempts=int(entry.get("attempts", 0)) + 1)
            state.save()
            emit({"job": todo[k], "input": job.input, "output": job.output, "stage": "start"})

        def on_progress(k: int, payload: Any) -> None:
            # the conversion's own convert/mux events; its "done" is announced once recorded
            if isinstance(payload, dict) and payload.get("stage") in ("convert", "mux"):
                emit({"job": todo[k], **payload})
            elif isinstance(payload, dict) and payload.get("stage") == "warning":
                log.warning("%s: %s", _job_label(todo[k], jobs[todo[k]]), payload.get("message"))

        if todo:
            own = not hasattr(engine, "run")
            eng: Engine = make_engine(engine, workers, tasks=len(todo), ray_address=ray_address,
                                      in_process=False) if own else engine  # type: ignore[arg-type]
            try:
                runs = eng.run(_run_job, items, on_progress=on_progress, on_start=on_start)
                try:
                    for r in runs:
                        i = todo[r.index]
                        job = jobs[i]
                        entry = state.jobs[job.key]
                        if r.ok:
                            try:
                                size = os.path.getsize(job.output)
                            except OSError:
                                size = None
                            entry.update(status="done", finished=_now(), error=None, report=r.value, bytes=size)
                            results[i] = JobResult(i, job.input, job.output, "done", attempts=entry["attempts"],
                                                   report=r.value)
                            event = {"job": i, "input": job.input, "output": job.output, "stage": "done",
                                     "report": r.value}
                        else:
                            msg, code = _reason(r.error)
                            entry.update(status="failed", finished=_now(), error=msg, exit_code=code)
                            results[i] = JobResult(i, job.input, job.output, "failed", msg, code,
                                                   attempts=entry["attempts"])
                            event = {"job": i, "input": job.input, "output": job.output, "stage": "failed",
                                     "error": msg}
                        state.save()  # before telling anyone: a "done" event means recorded
                        emit(event)
                except BaseException:
                    for job in jobs:  # killed or interrupted: a rerun redoes these
                        entry = state.jobs.get(job.key)
                        if entry and entry.get("status") == "running":
                            entry.update(status="interrupted", finished=_now(), error="interrupted")
                    state.save()
                    raise
                finally:
                    runs.close()  # type: ignore[attr-defined]
            finally:
                if own:
                    eng.close()
    final = [r for r in results if r is not None]
    if len(final) != len(jobs):  # cannot happen unless an engine lost a task
        for i, r in enumerate(results):
            if r is None:
                final.insert(i, JobResult(i, jobs[i].input, jobs[i].output, "failed", "lost by the engine", 1))
    return BatchSummary(final, str(state_file), time.perf_counter() - t0)
