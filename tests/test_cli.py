"""The command line: one-line errors with documented exit codes, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import flat_planes, write_planes_clip


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hdrvideo.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, needle: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    return write_planes_clip(d / "in.mkv", [flat_planes(64, 36, (180, 128, 128))] * 3, audio_seconds=0.2)


def test_bad_inputs_exit_2_with_one_line(tmp_path):
    assert_one_line_error(run("convert", str(tmp_path / "missing.mp4")), 2, "input not found")
    assert_one_line_error(run("convert", str(tmp_path / "frame%04d.png")), 2, "image sequences are not read")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert_one_line_error(run("convert", str(empty)), 2, "empty")
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    assert_one_line_error(run("convert", str(junk)), 2, "not a readable media file")
    hdr = write_planes_clip(tmp_path / "pq.mkv", [flat_planes(64, 36, (500, 512, 512), bits=10)],
                            pix_fmt="yuv420p10le", tags=(9, 16, 9, 1))
    assert_one_line_error(run("convert", str(hdr)), 2, "already HDR")


def test_usage_errors_exit_2(tmp_path, clip):
    assert_one_line_error(run("convert", str(clip), "--preset", "nope"), 2, "unknown preset 'nope'")
    assert_one_line_error(run("convert", str(clip), "-o", str(tmp_path / "x.avi")), 2, "unsupported output extension")
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"x")
    assert_one_line_error(run("convert", str(clip), "-o", str(existing)), 2, "--force")
    assert_one_line_error(run("convert", str(clip), "--start", "abc"), 2, "invalid time")
    assert_one_line_error(run("convert", str(clip), "--device", "tpu"), 2, "--device")
    import torch

    if not torch.cuda.is_available():
        assert_one_line_error(run("convert", str(clip), "--device", "cuda"), 2, "no CUDA GPU")
    bad_preset = tmp_path / "bad.toml"
    bad_preset.write_text('processor = "bt2408"\nscael = 2\n')
    assert_one_line_error(run("convert", str(clip), "--preset", str(bad_preset)), 2, "unknown key(s) scael")


def test_missing_weights_message(tmp_path, clip):
    proc = run("convert", str(clip), "--preset", "itm-agcm", "-o", str(tmp_path / "o.mp4"))
    assert_one_line_error(proc, 2, "--weights")
    assert not (tmp_path / "o.mp4").exists()


def test_convert_json_progress_and_report(tmp_path, clip):
    out = tmp_path / "out.mp4"
    proc = run("convert", str(clip), "-o", str(out), "--x265-preset", "ultrafast", "--progress", "json", "--json")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert events and events[-1]["stage"] == "done"
    for e in events:
        assert set(e) >= {"frame", "total", "fps", "eta_s", "stage"}
    final = events[-1]["report"]
    assert final["output"] == str(out) and final["frames"] == 3
    report = json.loads(proc.stdout)
    assert report["max_cll"] == final["max_cll"] > 0
    assert report["output_size"] == [64, 36]


def test_probe_reports_like_mediainfo(tmp_path, clip):
    out = tmp_path / "out.mkv"
    assert run("convert", str(clip), "-o", str(out), "--x265-preset", "ultrafast").returncode == 0
    proc = run("probe", str(out))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "HDR format" in text and "SMPTE ST 2086, HDR10 compatible" in text
    assert "Transfer characteristics          : PQ" in text
    assert "Color primaries                   : BT.2020" in text
    assert "Mastering display color primaries : Display P3" in text
    assert "max: 1000 cd/m2" in text and "Maximum Content Light Level" in text
    data = json.loads(run("probe", str(out), "--json").stdout)
    assert data["video"]["transfer_tag"] == 16 and data["hdr10"]["max_cll"] > 0


def test_presets_lists_all_with_default(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    proc = run("presets", "--json")
    assert proc.returncode == 0, proc.stderr
    items = {p["name"]: p for p in json.loads(proc.stdout)}
    assert {"bt2408", "itm", "sr2-itm", "sr4-itm", "sr4-itm-gpgm", "itm-agcm", "auto"} <= set(items)
    assert items["bt2408"]["default"] is True
    assert items["sr4-itm"]["arch"] == "irnet-5-x4"
    text = run("presets").stdout
    assert "bt2408" in text and "(default)" in text
    # on an 80-column terminal the descriptions read as text, not a word per line
    assert "Classical ITU-R BT.2408 display-light mapping" in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80


def test_sample_then_convert_quick_start(tmp_path):
    proc = run("sample", "s.mp4", "--size", "64x36", "--seconds", "0.5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run("convert", "s.mp4", "--x265-preset", "ultrafast", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "s.hdr10.mp4"
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "hevc"
        assert len(c.streams.audio) == 1
    assert "MaxCLL" in proc.stdout
    assert_one_line_error(run("sample", "s.mp4", cwd=tmp_path), 2, "exists")


def test_debug_shows_traceback(tmp_path):
    proc = run("--debug", "convert", str(tmp_path / "missing.mp4"))
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr or "InputError" in proc.stderr
