"""Ctrl-C and SIGTERM: a run ends with the complete output and exit 0, or with nothing left and
exit 130 — never an abort, a traceback, or a temporary folder left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import pytest

from conftest import flat_planes, write_planes_clip

HERE = Path(__file__).resolve().parent
FRAMES = 12

# (signal, stage whose JSON progress line triggers it, delay in seconds): during the conversion,
# in the encoder flush and light metering (where SIGTERM used to abort the process with
# "terminate called without an active exception"), around the mux and the rename, and after
# the final line while the process exits.
TRIALS = [
    ("SIGINT", "convert", 0.0),
    ("SIGTERM", "flush", 0.0),
    ("SIGTERM", "meter", 0.0),
    ("SIGTERM", "meter", 0.05),
    ("SIGTERM", "mux", 0.0),
    ("SIGTERM", "mux", 0.01),
    ("SIGINT", "mux", 0.03),
    ("SIGTERM", "done", 0.0),
    ("SIGINT", "done", 0.01),
]


def test_signals_end_with_complete_output_or_nothing(tmp_path):
    src = write_planes_clip(tmp_path / "in.mkv", [flat_planes(64, 36, (180, 128, 128))] * FRAMES)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONPATH=str(HERE.parent))
    proc = subprocess.run([sys.executable, str(HERE / "signal_driver.py"), str(src), str(tmp_path), json.dumps(TRIALS)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=HERE.parent)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert len(results) == len(TRIALS)
    for r in results:
        label = f"{r['signal']} at {r['trigger']}+{r['delay']}s: exit {r['exit']}, left {r['left']}\n{r['stderr'][-2000:]}"
        assert r["sent"], label
        assert "terminate called" not in r["stderr"] and "Traceback" not in r["stderr"], label
        assert r["exit"] in (0, 130), label
        lines = [json.loads(line) for line in r["stderr"].splitlines() if line.strip()]  # JSON lines only
        if r["exit"] == 0:
            assert r["left"] == ["out.mp4"], label
            with av.open(str(tmp_path / f"trial{results.index(r)}" / "out.mp4")) as c:
                assert sum(1 for _ in c.decode(video=0)) == FRAMES, label
            assert lines[-1]["stage"] == "done", label
        else:
            assert r["left"] == [], label  # no output, no temporary folder
            assert lines[-1] == {"stage": "failed", "error": "interrupted; no partial output was left",
                                 "exit_code": 130}, label
    assert results[0]["exit"] == 130  # interrupted mid-conversion
    assert results[-1]["exit"] == 0 and results[-2]["exit"] == 0  # the outcome was decided: exit 0


def test_critical_section_holds_the_signal_until_it_ends():
    from hdrvideo import signals

    steps = []
    with signals.handling():
        with pytest.raises(KeyboardInterrupt):
            with signals.critical():
                signal.raise_signal(signal.SIGINT)  # held, not raised here
                steps.append("finished the section")
        steps.append("raised after it")
        with signals.critical():  # finish(): the outcome is decided, the held signal is dropped
            signal.raise_signal(signal.SIGINT)
            signals.finish()
        steps.append("dropped")
    assert steps == ["finished the section", "raised after it", "dropped"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_stale_work_folders_of_gone_processes_are_removed(tmp_path):
    import socket

    from hdrvideo.fsutil import OWNER_FILE, make_work_dir
    from hdrvideo.pipeline import Pipeline

    src = write_planes_clip(tmp_path / "in.mkv", [flat_planes(64, 36, (180, 128, 128))] * 3)
    gone = subprocess.Popen(["true"])
    gone.wait()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        def folder(name: str, owner: dict | None) -> Path:
            d = tmp_path / name
            d.mkdir()
            (d / "video.mp4").write_bytes(b"x")
            if owner is not None:
                (d / OWNER_FILE).write_text(json.dumps(owner))
            return d

        host = socket.gethostname()
        stale = folder(".old.mp4.abc123.hdrvideo-tmp", {"host": host, "pid": gone.pid, "start": None})
        stale_chunks = folder(".old.mp4.def456.hdrvideo-chunks", {"host": host, "pid": gone.pid, "start": None})
        live = folder(".busy.mp4.ghi789.hdrvideo-tmp", {"host": host, "pid": alive.pid, "start": None})
        other_host = folder(".far.mp4.jkl012.hdrvideo-tmp", {"host": host + "-elsewhere", "pid": gone.pid})
        unowned = folder(".legacy.mp4.mno345.hdrvideo-tmp", None)
        report = Pipeline(src, tmp_path / "out.mp4", x265_preset="ultrafast").run()
        assert report.frames == 3
        assert not stale.exists() and not stale_chunks.exists()
        assert live.exists() and other_host.exists() and unowned.exists()
        # our own work folders record their owner
        d = make_work_dir(tmp_path, ".x.", ".hdrvideo-tmp")
        assert json.loads((Path(d) / OWNER_FILE).read_text())["pid"] == os.getpid()
    finally:
        alive.kill()
        alive.wait()
