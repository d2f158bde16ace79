"""scripts/gpu-check.sh works before it ever meets a GPU: its dry run takes the same code paths on
the CPU at tiny sizes (the compile step is the model step with torch.compile, left out for time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu-check.sh"


def _strict_json(text: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.slow
def test_dry_run_writes_a_complete_summary_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    proc = subprocess.run([str(SCRIPT), str(out), "--dry-run", "--only", "env,tests,input,model,bench16,presets"],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu-check.log", "summary.json"]  # ≤ 8 files come back
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("hdrvideo-gpu-check-")]  # scratch removed
    summary = _strict_json((out / "summary.json").read_text())
    steps = summary["steps"]
    assert summary["dry_run"] is True
    assert {k: v["status"] for k, v in steps.items()} == {k: "ok" for k in
                                                         ("env", "tests", "input", "model", "bench16", "presets")}
    assert steps["env"]["result"]["encoders"]["libx265"] == "opens"
    assert steps["tests"]["result"]["ok"] and steps["tests"]["result"]["tests"] >= 5
    assert "test_gpu_torch.py" in steps["tests"]["result"]["files"]
    variants = steps["model"]["result"]["variants"]
    assert len(variants) == 6 and all(v.get("fps", 0) > 0 for v in variants.values()), variants
    assert "FP16 with FP32 statistics" in variants["fp16-graphs (default)"]["backend"]
    bench = steps["bench16"]["result"]
    assert bench["ok"] and bench["precision"] == "fp16" and bench["output_size"] == [128, 72]
    assert "FP16 with FP32 statistics" in bench["processor"]
    presets = steps["presets"]["result"]
    assert presets["ok"] and {"bt2408", "itm", "sr2-itm", "sr4-itm", "sr4-itm-gpgm"} <= set(presets["presets"])
    assert presets["presets"]["sr4-itm"]["fp16"]["max_abs"] < 1e-2
    key = summary["key_figures"]
    assert key["bench_fp16"]["end_to_end"] > 0 and key["presets_agree_with_cpu"] is True
    assert key["model_fps[fp16-graphs (default)]"] > 0


def test_usage_and_missing_packages_are_one_line_errors(tmp_path):
    proc = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("usage:")
    # a Python without PyAV and no wheels to install: say what to do, before any work
    fake = tmp_path / "python3"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "HDRVIDEO_WHEELS": str(tmp_path / "none")}
    proc = subprocess.run([str(SCRIPT), str(tmp_path / "o")], capture_output=True, text=True, timeout=60, env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "--fetch-wheels" in lines[0] and "av" in lines[0]
