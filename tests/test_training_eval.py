"""Evaluation core (two callables side by side), the preset wiring and the JSON report."""

import json

import numpy as np
import pytest
import torch

from hdrvideo.errors import InputError
from hdrvideo.training.evaluate import compare, evaluate_preset, passes_bar, report_table
from hdrvideo.training.imageio import write_png


def pairs(n=3, scale=1, h=16, w=20):
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        sdr = torch.rand(1, 3, h, w, generator=g)
        hdr = torch.rand(1, 3, h * scale, w * scale, generator=g)
        yield f"p{i}", sdr, hdr


def test_compare_two_callables():
    targets = {name: hdr for name, _, hdr in pairs()}
    cache = iter(targets.values())
    good = lambda x: (next(cache) + 0.01).clamp(0, 1)  # close to the target
    bad = lambda x: torch.full((1, 3, 16, 20), 0.5)
    r = compare(pairs(), {"model": good, "baseline": bad})
    assert r["images"] == 3 and set(r["metrics"]) == {"model", "baseline"}
    assert set(r["metrics"]["model"]) == {"psnr", "ssim", "delta_e_itp"}
    assert r["metrics"]["model"]["psnr"] > r["metrics"]["baseline"]["psnr"]
    assert len(r["per_image"]) == 3 and r["per_image"][0]["name"] == "p0"
    assert passes_bar(r["metrics"]["model"], r["metrics"]["baseline"])
    assert not passes_bar(r["metrics"]["baseline"], r["metrics"]["model"])
    with pytest.raises(ValueError):
        compare(pairs(scale=1), {"wrong-size": lambda x: torch.zeros(1, 3, 8, 8)})


@pytest.fixture()
def png_dir(tmp_path):
    rng = np.random.default_rng(0)
    for sub in ("test_sdr", "test_hdr"):
        (tmp_path / sub).mkdir()
    for i in range(2):
        write_png(tmp_path / "test_sdr" / f"f{i}.png", rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
        write_png(tmp_path / "test_hdr" / f"f{i}.png", rng.integers(0, 40000, (24, 32, 3), dtype=np.uint16))
    return tmp_path


def test_evaluate_preset_json_structure(png_dir, tmp_path):
    from hdrvideo.models import create, save_weights

    torch.manual_seed(0)
    w = save_weights(create("irnet-5-x2"), tmp_path / "x2.safetensors")
    r = evaluate_preset("sr2-itm", png_dir, weights=str(w), per_image=True)
    json.dumps(r)  # serialisable
    assert r["preset"] == "sr2-itm" and r["arch"] == "irnet-5-x2" and r["scale"] == 2 and r["images"] == 2
    assert set(r["metrics"]) == {"sr2-itm", "bt2408"}
    assert set(r["difference"]) == {"psnr", "ssim", "delta_e_itp"}
    assert isinstance(r["passes_bar"], bool) and len(r["weights_sha256"]) == 64
    assert r["difference"]["psnr"] == pytest.approx(r["metrics"]["sr2-itm"]["psnr"] - r["metrics"]["bt2408"]["psnr"])
    assert len(r["per_image"]) == 2
    report_table(r)


def test_eval_command_json_and_errors(png_dir, tmp_path):
    typer = pytest.importorskip("typer")
    from typer.testing import CliRunner

    from hdrvideo.training.cli import eval_command, train_command

    app = typer.Typer()
    app.command("eval")(eval_command)
    app.command("train")(train_command)
    res = CliRunner().invoke(app, ["eval", "--preset", "bt2408", "--data", str(png_dir), "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert r["images"] == 2 and r["baseline"] == "bt2408"
    res = CliRunner().invoke(app, ["eval", "--preset", "bt2408", "--data", str(tmp_path / "missing")])
    assert isinstance(res.exception, InputError)
    res = CliRunner().invoke(app, ["train", "--arch", "nope", "--out", str(tmp_path / "o"), "--data", str(png_dir)])
    assert isinstance(res.exception, InputError) and "unknown architecture" in str(res.exception)
    res = CliRunner().invoke(app, ["train", "--arch", "irnet-2", "--out", str(tmp_path / "o")])
    assert isinstance(res.exception, InputError)


def test_train_command_on_folder_pairs(tmp_path):
    typer = pytest.importorskip("typer")
    from typer.testing import CliRunner

    from hdrvideo.training.cli import register

    rng = np.random.default_rng(1)
    for sub in ("train_sdr", "train_hdr"):
        (tmp_path / sub).mkdir()
    for i in range(2):
        write_png(tmp_path / "train_sdr" / f"f{i}.png", rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
        write_png(tmp_path / "train_hdr" / f"f{i}.png", rng.integers(0, 40000, (24, 32, 3), dtype=np.uint16))
    app = typer.Typer()
    register(app)
    args = ["train", "--arch", "irnet-1-48", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--steps", "3",
            "--batch", "1", "--patch", "16", "--device", "cpu", "--threads", "1", "--quiet"]
    res = CliRunner().invoke(app, args + ["--stop-after", "1"])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "run" / "irnet-1-48.safetensors").exists()
    res = CliRunner().invoke(app, args + ["--resume"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "irnet-1-48.safetensors").is_file()
