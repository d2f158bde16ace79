"""Farm deployment: batch jobs with resume, chunked conversion of one film, execution engines.

Python API::

    from hdrvideo.farm import Job, run_batch, convert_chunked

    convert_chunked("film.mov", "film.hdr10.mov", preset="bt2408", chunks=8, engine="ray")
    summary = run_batch([Job("a.mp4", "out/a.hdr10.mp4"), Job("b.mkv", "out/b.hdr10.mkv")],
                        "out/state.json", workers=2)
    print(summary.exit_code)  # 0, or 3 when some jobs failed

Heavy modules (torch, PyAV, Ray) load only when these are used.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Job",
    "JobResult",
    "BatchSummary",
    "run_batch",
    "load_manifest",
    "jobs_from_dir",
    "check_output",
    "convert_chunked",
    "plan_chunks",
    "ChunkedReport",
    "LocalEngine",
    "RayEngine",
    "make_engine",
    "WorkerDied",
]

_WHERE = {
    "Job": "batch", "JobResult": "batch", "BatchSummary": "batch", "run_batch": "batch", "load_manifest": "batch",
    "jobs_from_dir": "batch", "check_output": "batch",
    "convert_chunked": "chunks", "plan_chunks": "chunks", "ChunkedReport": "chunks",
    "LocalEngine": "engines", "RayEngine": "engines", "make_engine": "engines", "WorkerDied": "engines",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
