"""`hdrvideo bench`: every figure is measured, efficiency is computed, weights are never silently random."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from hdrvideo import models
from hdrvideo.bench import parse_size, run_bench, thread_budget
from hdrvideo.errors import UsageError, WeightsMissingError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HDRVIDEO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HDRVIDEO_ENGINES", str(tmp_path / "no-engines"))


def test_bench_measures_every_stage_with_given_weights(tmp_path):
    torch.manual_seed(0)
    w = models.save_weights(models.create("irnet-1-48"), tmp_path / "w.safetensors")
    preset = tmp_path / "tiny.toml"
    preset.write_text('name = "tiny"\ndescription = "t"\nprocessor = "neural"\nscale = 1\nbatch = 2\n'
                      '[model]\narch = "irnet-1-48"\n[encode]\nx265_preset = "ultrafast"\n')
    r = run_bench(str(preset), weights=str(w), backend="onnxruntime", device="cpu", size=(64, 36), frames=5,
                  threads=1)
    assert r.backend == "onnxruntime" and r.weights == str(w) and r.input == "synthetic"
    assert r.frames == 5 and r.batch == 2 and r.input_size == (64, 36) and r.output_size == (64, 36)
    for k in ("decode", "model", "colour_pack", "process", "encode", "measure", "end_to_end"):
        assert r.fps[k] > 0, k
    assert r.fps["process"] <= min(r.fps["model"], r.fps["colour_pack"])
    assert r.slowest_stage in ("decode", "process", "encode", "measure")
    assert 0 < r.efficiency and r.peak_rss_mb > 0 and r.threads["model"] == 1
    d = r.to_dict()
    assert json.loads(json.dumps(d))["fps"]["end_to_end"] == r.fps["end_to_end"]


def test_bench_without_weights_refuses_unless_random_is_asked_for(tmp_path):
    # every built-in preset now ships its weights, so use a preset whose weights are not installed
    preset = tmp_path / "unshipped.toml"
    preset.write_text('name = "unshipped"\ndescription = "t"\nprocessor = "neural"\nscale = 1\n'
                      '[model]\narch = "irnet-1-48"\nweights = "not-installed.safetensors"\n')
    with pytest.raises(WeightsMissingError, match="--random-weights"):
        run_bench(str(preset), backend="onnxruntime", device="cpu", size=(64, 36), frames=2)
    r = run_bench(str(preset), backend="onnxruntime", device="cpu", size=(64, 36), frames=2,
                  random_weights=True, threads=1)
    assert r.weights == "random (bench only)" and r.frames == 2


def test_bench_cli_json_random_weights_is_labelled(tmp_path):
    from hdrvideo.cli import _register_optional_commands, app

    if not any(getattr(c, "name", None) == "bench" for c in app.registered_commands):
        _register_optional_commands()
    res = CliRunner().invoke(app, ["bench", "--preset", "itm", "--random-weights", "--backend", "torch",
                                   "--device", "cpu", "--size", "64x36", "--frames", "3", "--x265-preset",
                                   "ultrafast", "--threads", "1", "--all-backends", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["weights"] == "random (bench only)" and d["backend"] == "torch"
    assert any("random weights" in n for n in d["notes"])
    assert set(d["fps"]) >= {"decode", "model", "colour_pack", "encode", "end_to_end", "steady_state"}
    assert {"torch", "onnxruntime"} <= set(d["model_fps_by_backend"])  # TensorRT: a note, not a failure
    if "tensorrt" not in d["model_fps_by_backend"]:
        assert any(n.startswith("tensorrt: not available") for n in d["notes"])


def test_sizes_and_budget():
    assert parse_size("240x136") == (240, 136)
    with pytest.raises(UsageError):
        parse_size("241x136")
    with pytest.raises(UsageError):
        parse_size("big")
    assert thread_budget("cpu", 2) == {"cores": 2, "model": 1, "torch": 1}
    assert thread_budget("cpu", 8)["model"] == 7
    assert thread_budget("cuda", 8)["model"] == 1
