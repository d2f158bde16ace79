"""Ray engine: chunked conversion and batch jobs as Ray tasks on a local single-node Ray.

Skipped when Ray is not installed (``pip install .[ray]``). Ray ≥ 2.4x no longer has
``local_mode``; the tests start a small local Ray instance instead (2 CPUs, no dashboard).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

import hdrvideo  # noqa: E402
from hdrvideo.farm.batch import Job, run_batch  # noqa: E402
from hdrvideo.farm.chunks import convert_chunked  # noqa: E402
from hdrvideo.farm.engines import RayEngine  # noqa: E402

from conftest import audio_packets, video_pts  # noqa: E402
from test_farm_chunks import FAST, film_clip  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield
    if started:
        ray.shutdown()


def test_chunks_as_ray_tasks_through_the_object_store(local_ray, tmp_path):
    src = film_clip(tmp_path / "film.mp4", 24, gop=8, audio=1.0)
    whole = hdrvideo.convert(src, tmp_path / "whole.mp4", **FAST)
    engine = RayEngine()
    assert engine.gpus_per_task == 0  # no GPU in this cluster → tasks declare none
    work = tmp_path / "work"
    report = convert_chunked(src, tmp_path / "ray.mp4", chunks=3, engine=engine, transfer="object-store",
                             work_dir=work, **FAST)
    assert report.engine == "ray" and len(report.chunks) == 3
    assert report.frames == whole.frames == 24
    assert video_pts(report.output) == video_pts(whole.output)
    assert audio_packets(report.output) == audio_packets(whole.output)
    assert report.max_cll == max(c["max_cll"] for c in report.chunks)
    assert not list(work.iterdir())  # the work directory's chunk files are gone


def test_batch_jobs_as_ray_tasks(local_ray, tmp_path):
    src = film_clip(tmp_path / "a.mp4", 8, gop=4, audio=0.5)
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(b"nope")
    jobs = [Job(str(src), str(tmp_path / "out" / "a.mp4"), options=FAST), Job(str(bad), str(tmp_path / "out" / "b.mp4"))]
    summary = run_batch(jobs, tmp_path / "state.json", engine=RayEngine(gpus_per_task=0))
    assert [j.status for j in summary.jobs] == ["done", "failed"]
    assert "not a readable media file" in summary.jobs[1].reason and summary.jobs[1].exit_code == 2
    assert summary.exit_code == 3 and Path(summary.jobs[0].output).is_file()
