"""Sends SIGTERM/SIGINT to real `hdrvideo convert` processes at chosen moments (used by
tests/test_cli_signals.py).

Usage: python signal_driver.py SRC WORKDIR TRIALS_JSON — prints one JSON list of results.

The CLI is imported once here; every trial forks a child (before any thread exists: run with
OPENBLAS_NUM_THREADS=1) that runs ``hdrvideo.cli.main()`` with ``--progress json``, so a trial
costs a conversion, not an interpreter start. The parent reads the child's stderr until the
trial's trigger stage appears, waits ``delay`` seconds, sends the signal and records the exit
status, stderr and what is left in the output folder.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time

import hdrvideo.cli
import hdrvideo.farm.chunks  # noqa: F401 - warm imports, so each forked trial only converts
import hdrvideo.pipeline  # noqa: F401


def trial(src: str, out_dir: str, sig: int, trigger: str, delay: float) -> dict:
    out = os.path.join(out_dir, "out.mp4")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a real CLI process
        os.close(r)
        os.dup2(w, 2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        sys.argv = ["hdrvideo", "convert", src, "-o", out, "--progress", "json", "--x265-preset", "ultrafast"]
        hdrvideo.cli.main()  # ends with os._exit
        os._exit(99)
    os.close(w)
    text = b""
    sent = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([r], [], [], 0.02)
        if ready:
            chunk = os.read(r, 65536)
            if not chunk:  # the child is exiting: a signal still due is sent now
                if sent is not None and sent > 0:
                    _kill(pid, sig)
                    sent = -1.0
                break
            text += chunk
        if sent is None and any(_stage(line) == trigger for line in text.split(b"\n")):
            sent = time.monotonic() + delay
        if sent is not None and time.monotonic() >= sent and sent > 0:
            _kill(pid, sig)
            sent = -1.0  # sent
    while True:  # the rest of the child's stderr
        chunk = os.read(r, 65536)
        if not chunk:
            break
        text += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return {"signal": signal.Signals(sig).name, "trigger": trigger, "delay": delay, "sent": sent == -1.0,
            "exit": os.waitstatus_to_exitcode(status), "stderr": text.decode("utf-8", "replace"),
            "left": sorted(os.listdir(out_dir))}


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _stage(line: bytes) -> str | None:
    try:
        return json.loads(line).get("stage")
    except ValueError:
        return None


def main() -> None:
    src, workdir, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    hdrvideo.cli._register_optional_commands()
    results = []
    for i, (name, trigger, delay) in enumerate(spec):
        out_dir = os.path.join(workdir, f"trial{i}")
        os.mkdir(out_dir)
        results.append(trial(src, out_dir, getattr(signal, name), trigger, delay))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
