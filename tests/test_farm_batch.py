"""``hdrvideo batch``: manifests, per-job failures, the state file, resume after killed workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hdrvideo.errors import UsageError
from hdrvideo.farm.batch import Job, check_output, jobs_from_dir, load_manifest, run_batch
from hdrvideo.farm.engines import LocalEngine

from conftest import flat_planes, write_planes_clip

FAST = {"x265_preset": "ultrafast"}


def clip(path: Path, frames: int = 6, level: int = 180) -> Path:
    return write_planes_clip(path, [flat_planes(64, 36, (level, 128, 128))] * frames, audio_seconds=0.2)


def state_of(path: Path) -> dict:
    return json.loads(path.read_text())["jobs"]


# ------------------------------------------------------------------------------ manifests


def test_manifest_csv_and_jsonl(tmp_path):
    (tmp_path / "sub").mkdir()
    csv_text = (
        "input,output,preset,options,crf\n"
        "a.mkv,out/a.mp4,bt2408,\"{\"\"x265_preset\"\": \"\"ultrafast\"\"}\",20\n"
        "# a comment\n"
        "sub/b.mov,,,,\n"
    )
    (tmp_path / "jobs.csv").write_text(csv_text)
    jobs = load_manifest(tmp_path / "jobs.csv", {"preset": "itm", "options": {"crf": 30, "copy_audio": False}})
    assert [Path(j.input) for j in jobs] == [tmp_path / "a.mkv", tmp_path / "sub" / "b.mov"]
    assert Path(jobs[0].output) == tmp_path / "out" / "a.mp4"
    assert Path(jobs[1].output) == tmp_path / "sub" / "b.hdr10.mov"  # default output beside the input
    assert jobs[0].preset == "bt2408" and jobs[1].preset == "itm"
    assert jobs[0].options == {"crf": 20, "copy_audio": False, "x265_preset": "ultrafast"}
    assert jobs[1].options == {"crf": 30, "copy_audio": False}

    lines = [{"input": "/abs/x.mp4", "output": "o/x.mkv", "options": {"crf": 12}},
             {"input": "y.mp4", "preset": "itm", "x265_preset": "fast"}]
    (tmp_path / "jobs.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    jobs = load_manifest(tmp_path / "jobs.jsonl", {"output_dir": str(tmp_path / "o2")})
    assert jobs[0].input == "/abs/x.mp4" and Path(jobs[0].output) == tmp_path / "o" / "x.mkv"
    assert jobs[0].options == {"crf": 12}
    assert Path(jobs[1].output) == tmp_path / "o2" / "y.hdr10.mp4"
    assert jobs[1].options == {"x265_preset": "fast"} and jobs[1].preset == "itm"
    assert jobs[0].fingerprint() != Job("/abs/x.mp4", "o/x.mkv", options={"crf": 13}).fingerprint()


@pytest.mark.parametrize("name,text,needle", [
    ("bad.jsonl", '{"input": "a.mp4"}\nnot json\n', "bad.jsonl:2: invalid JSON"),
    ("noinput.csv", "output,preset\nx.mp4,bt2408\n", "'input' column"),
    ("empty.csv", "input\n", "no jobs"),
    ("opts.jsonl", '{"input": "a.mp4", "options": [1]}\n', "JSON object"),
])
def test_manifest_errors_are_usage_errors(tmp_path, name, text, needle):
    (tmp_path / name).write_text(text)
    with pytest.raises(UsageError, match=needle):
        load_manifest(tmp_path / name)


def test_jobs_from_dir(tmp_path):
    src = tmp_path / "in"
    (src / "deep").mkdir(parents=True)
    for name in ("b.mkv", "a.MP4", "notes.txt", ".hidden.mp4", "done.hdr10.mp4", "deep/c.mov"):
        (src / name).write_bytes(b"x")
    jobs = jobs_from_dir(src, tmp_path / "out", "itm", {"crf": 20})
    assert [Path(j.input).name for j in jobs] == ["a.MP4", "b.mkv"]
    assert [Path(j.output).name for j in jobs] == ["a.hdr10.mp4", "b.hdr10.mkv"]
    deep = jobs_from_dir(src, tmp_path / "out", recursive=True)
    assert Path(deep[-1].output) == tmp_path / "out" / "deep" / "c.hdr10.mov"
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no video files"):
        jobs_from_dir(tmp_path / "empty", tmp_path / "o")


# ------------------------------------------------------------------ running and resuming


def test_bad_input_fails_its_job_only_and_rerun_resumes(tmp_path):
    good_a, good_b = clip(tmp_path / "a.mkv"), clip(tmp_path / "b.mkv", level=120)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    out = tmp_path / "out"
    jobs = [Job(str(good_a), str(out / "a.mp4"), options=FAST), Job(str(bad), str(out / "bad.mp4"), options=FAST),
            Job(str(good_b), str(out / "b.mkv"), options=FAST),
            Job(str(good_a), str(out / "typo.mp4"), options={"x265_presett": "fast"})]
    state = tmp_path / "state.json"
    events: list[dict] = []
    summary = run_batch(jobs, state, engine=LocalEngine(1, in_process=True), on_event=events.append)
    assert [j.status for j in summary.jobs] == ["done", "failed", "done", "failed"]
    assert summary.exit_code == 3
    assert "not a readable media file" in summary.jobs[1].reason and summary.jobs[1].exit_code == 2
    assert "unknown option 'x265_presett'" in summary.jobs[3].reason
    assert summary.jobs[0].report["frames"] == 6
    st = state_of(state)
    assert st[str(out / "a.mp4")]["status"] == "done" and st[str(out / "bad.mp4")]["status"] == "failed"
    assert {e["stage"] for e in events} >= {"start", "convert", "done", "failed"}
    d = summary.to_dict()
    assert (d["done"], d["failed"], d["skipped"], d["exit_code"]) == (2, 2, 0, 3)

    # rerun (in this process): finished jobs are skipped, failed ones retried
    mtime = (out / "a.mp4").stat().st_mtime_ns
    again = run_batch(jobs, state, engine=LocalEngine(1, in_process=True))
    assert [j.status for j in again.jobs] == ["skipped", "failed", "skipped", "failed"]
    assert again.jobs[1].attempts == 2 and (out / "a.mp4").stat().st_mtime_ns == mtime

    # a finished output that no longer checks out is converted again
    (out / "b.mkv").write_bytes((out / "b.mkv").read_bytes()[:300])
    assert check_output(str(out / "b.mkv"), st[str(out / "b.mkv")]["report"]) is not None
    fixed = [jobs[0], jobs[2]]
    third = run_batch(fixed, state, engine=LocalEngine(1, in_process=True))
    assert [j.status for j in third.jobs] == ["skipped", "done"] and third.exit_code == 0
    assert check_output(str(out / "b.mkv"), third.jobs[1].report) is None


def test_existing_outputs_are_not_overwritten_without_force(tmp_path):
    src = clip(tmp_path / "a.mkv", frames=2)
    dst = tmp_path / "a.hdr10.mp4"
    dst.write_bytes(b"someone else's file")
    jobs = [Job(str(src), str(dst), options=FAST)]
    engine = LocalEngine(1, in_process=True)
    summary = run_batch(jobs, tmp_path / "s.json", engine=engine)
    assert summary.jobs[0].status == "failed" and "--force" in summary.jobs[0].reason
    assert dst.read_bytes() == b"someone else's file"
    assert run_batch(jobs, tmp_path / "s.json", engine=engine, force=True).jobs[0].status == "done"
    with pytest.raises(UsageError, match="same output"):
        run_batch(jobs * 2, tmp_path / "s2.json", engine=engine)


def test_worker_killed_mid_batch_then_resume_redoes_only_that_job(tmp_path):
    srcs = [clip(tmp_path / "a.mkv"), clip(tmp_path / "b.mkv", frames=96, level=150), clip(tmp_path / "c.mkv")]
    jobs = [Job(str(s), str(tmp_path / "out" / (s.stem + ".mp4")), options=FAST) for s in srcs]
    state = tmp_path / "state.json"
    engine = LocalEngine(1, in_process=False)  # one spawned worker process
    killed: list[int] = []

    def on_event(event: dict) -> None:  # SIGKILL the worker while it converts job 2
        if event["job"] == 1 and event["stage"] == "convert" and not killed:
            killed.append(engine.pids[0])
            os.kill(engine.pids[0], signal.SIGKILL)

    summary = run_batch(jobs, state, engine=engine, on_event=on_event)
    assert killed
    assert [j.status for j in summary.jobs] == ["done", "failed", "done"]  # a new worker took job 3
    assert "SIGKILL" in summary.jobs[1].reason and summary.exit_code == 3
    assert not (tmp_path / "out" / "b.mp4").exists()
    assert state_of(state)[jobs[1].key]["status"] == "failed"

    events: list[dict] = []
    again = run_batch(jobs, state, engine=LocalEngine(1, in_process=True), on_event=events.append)
    assert [j.status for j in again.jobs] == ["skipped", "done", "skipped"]
    assert [e["job"] for e in events if e["stage"] == "start"] == [1]
    assert again.jobs[1].report["frames"] == 96 and again.exit_code == 0
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_killed_batch_resumes_from_the_state_file(tmp_path):
    """The whole batch (driver and worker) is SIGKILLed after its first job; a rerun finishes it."""
    srcs = [clip(tmp_path / "a.mkv", frames=3)] + [clip(tmp_path / f"{n}.mkv", frames=24, level=90 + 20 * i)
                                                    for i, n in enumerate("bcd")]
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text("".join(json.dumps({"input": s.name, "output": f"out/{s.stem}.mp4"}) + "\n" for s in srcs))
    cmd = [sys.executable, "-m", "hdrvideo.cli", "batch", str(manifest), "--x265-preset", "ultrafast",
           "--progress", "json", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        for line in proc.stderr:  # type: ignore[union-attr]
            if line.startswith("{") and json.loads(line).get("stage") == "done":
                os.killpg(proc.pid, signal.SIGKILL)  # driver and worker, no cleanup
                break
            assert time.monotonic() < deadline
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    state = state_of(Path(str(manifest) + ".state.json"))
    done = {Path(k).name for k, v in state.items() if v["status"] == "done"}
    assert "a.mp4" in done and len(done) < 4, state
    first = (tmp_path / "out" / "a.mp4").stat().st_mtime_ns

    # resume (in this process, to keep the test short; the CLI is the same call)
    jobs = load_manifest(manifest, {"options": FAST})
    rerun = run_batch(jobs, Path(str(manifest) + ".state.json"), engine=LocalEngine(1, in_process=True))
    assert rerun.exit_code == 0
    status = {Path(j.output).name: j.status for j in rerun.jobs}
    assert status == {name: ("skipped" if name in done else "done") for name in ("a.mp4", "b.mp4", "c.mp4", "d.mp4")}
    assert (tmp_path / "out" / "a.mp4").stat().st_mtime_ns == first
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # stale temp dirs removed
    assert all(v["status"] == "done" for v in state_of(Path(str(manifest) + ".state.json")).values())


def test_cli_batch_input_dir_table_and_exit_codes(tmp_path):
    from typer.testing import CliRunner

    from hdrvideo.cli import _register_optional_commands, app

    _register_optional_commands()
    src = tmp_path / "in"
    src.mkdir()
    clip(src / "a.mkv", frames=2)
    (src / "broken.mp4").write_bytes(b"\x00" * 100)
    runner = CliRunner()
    old = signal.getsignal(signal.SIGTERM)
    try:
        args = ["batch", "--input-dir", str(src), "--output-dir", str(tmp_path / "out"), "--x265-preset",
                "ultrafast", "--progress", "none"]
        first = runner.invoke(app, args + ["--workers", "1"])
        assert first.exit_code == 3, first.output
        assert "a.mkv" in first.stdout and "failed" in first.stdout and "done" in first.stdout
        (src / "broken.mp4").unlink()
        second = runner.invoke(app, args + ["--json"])
        assert second.exit_code == 0, second.output
        assert [j["status"] for j in json.loads(second.stdout)["jobs"]] == ["skipped"]
        usage = runner.invoke(app, ["batch"])
        assert usage.exit_code == 2 and "MANIFEST" in usage.stderr
    finally:
        signal.signal(signal.SIGTERM, old)
