"""scripts/gpu-train.sh works before it ever meets a GPU: its dry run builds caches from the HDR
photographs, grades them with the teacher, calibrates, fine-tunes, evaluates and packs the weights,
on the CPU at toy sizes (needs ../shared: the photographs and AGCM)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu-train.sh"
PHOTOS = REPO.parent / "shared" / "data" / "hdr-photos" / "polyhaven"
AGCM = REPO.parent / "shared" / "reference" / "agcm" / "AGCM.pth"


@pytest.mark.slow
@pytest.mark.skipif(not (PHOTOS.is_dir() and AGCM.is_file()), reason="needs ../shared (HDR photographs, AGCM)")
def test_dry_run_trains_evaluates_and_packs_both_styles(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    proc = subprocess.run([str(SCRIPT), str(out), "--photos", str(PHOTOS), "--teacher", str(AGCM), "--dry-run",
                           "--runs", "itm,sr4-itm-real,sr4-itm-gpgm",
                           "--init", f"sr4-itm-real={REPO / 'engines' / 'irnet-5-x4.safetensors'}"], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu-train.log", "summary.json", "weights.tar"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("hdrvideo-gpu-train-")]  # scratch removed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == ["itm", "sr4-itm-real", "sr4-itm-gpgm"] and summary["dry_run"] is True
    caches = summary["data"]["caches"]
    assert len(caches["broadcast"]) == len(caches["real"]) == 2  # std and wide exposure keys
    for name in ("itm", "sr4-itm-real", "sr4-itm-gpgm"):
        assert summary["calibrate"][name]["rc"] == 0 and summary["calibrate"][name]["s_per_step"] > 0
        t = summary["train"][name]
        assert t["rc"] == 0 and t["steps_done"] == t["steps_planned"] == 2, t
        assert t["command"].startswith("hdrvideo train --arch ")
    ev = summary["eval"]
    # broadcast: the new file and the shipped one on the same held-out set, next to bt2408
    assert set(ev["itm"]) == {"new", "shipped"}
    for which in ("new", "shipped"):
        m = ev["itm"][which]["eval"]
        assert set(m) == {"itm", "bt2408"} and all(v["psnr"] > 10 for v in m.values()), m
        assert ev["itm"][which]["film"] and ev["itm"][which]["film_error"] is None
    # real ×4: no shipped file yet; scored against the teacher's grade, the teacher after bicubic too
    assert set(ev["sr4-itm-real"]) == {"new"}
    real = ev["sr4-itm-real"]["new"]
    assert real["eval_error"] is None and {"sr4-itm", "agcm+bicubic"} <= set(real["eval"]), real
    assert real["film"] and real["film_error"] is None
    # GPGMNet from scratch: no shipped file to compare; a preset without styles
    gpgm = ev["sr4-itm-gpgm"]
    assert set(gpgm) == {"new"} and gpgm["new"]["eval_error"] is None and gpgm["new"]["film_error"] is None
    assert "--init" not in summary["train"]["sr4-itm-gpgm"]["command"]
    assert summary["inits"] == {"sr4-itm-real": str(REPO / "engines" / "irnet-5-x4.safetensors")}
    with tarfile.open(out / "weights.tar") as tar:
        names = set(tar.getnames())
    assert names == {"itm/irnet-2.safetensors", "itm/log.jsonl", "sr4-itm-real/irnet-5-x4.safetensors",
                     "sr4-itm-real/log.jsonl", "sr4-itm-gpgm/gpgmnet-x4.safetensors", "sr4-itm-gpgm/log.jsonl"}


def test_bad_init_is_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    for bad, message in (("itm", "expected RUN=FILE"), (f"itm={tmp_path / 'none'}", "expected RUN=FILE"),
                         (f"nope={SCRIPT}", "unknown runs ['nope']")):
        proc = subprocess.run([str(SCRIPT), str(tmp_path / "o"), "--photos", str(tmp_path), "--init", bad],
                              capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 2 and message in proc.stdout + proc.stderr, (bad, proc.stderr)


def test_unknown_run_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([str(SCRIPT), str(tmp_path / "o"), "--photos", str(tmp_path), "--runs", "nope"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 2
    assert "unknown runs ['nope']" in proc.stdout + proc.stderr
