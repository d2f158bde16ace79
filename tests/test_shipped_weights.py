"""The weights shipped in engines/: checksums, provenance, installability, and their eval figures.

With ../shared present, the held-out set is rebuilt from the HDR photographs and every shipped
preset is re-evaluated: the figures in engines/weights.toml must reproduce and pass the bar.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from hdrvideo.models import get_spec, load_model, sha256_file
from hdrvideo.presets import engines_dirs, find_weights, load_preset

from conftest import REPO, SHARED

ENGINES = REPO / "engines"
MANIFEST = tomllib.loads((ENGINES / "weights.toml").read_text(encoding="utf-8"))
SHIPPED = sorted(MANIFEST)


def test_every_neural_preset_with_a_weights_file_is_shipped():
    # the IRNet presets ship weights that passed the bar; GPGMNet's were withdrawn (unbounded)
    assert {MANIFEST[f]["preset"] for f in SHIPPED} == {"itm", "sr2-itm", "sr4-itm"}
    assert all(MANIFEST[f]["style"] in ("real", "broadcast") for f in SHIPPED)
    # every preset's default style ships
    for p in {MANIFEST[f]["preset"] for f in SHIPPED}:
        preset = load_preset(p)
        assert any(MANIFEST[f]["preset"] == p and MANIFEST[f]["style"] == preset.style for f in SHIPPED), p
    assert sorted(p.name for p in ENGINES.glob("*.safetensors")) == SHIPPED


def test_withdrawn_gpgmnet_weights_are_refused(tmp_path):
    """sr4-itm-gpgm ships nothing, and weights of the unbounded GPGMNet are refused in one line."""
    from safetensors.torch import save_file

    from hdrvideo.models import create
    from hdrvideo.processors import build_processor

    assert find_weights(load_preset("sr4-itm-gpgm")) is None or "gpgmnet" not in str(ENGINES)
    old = tmp_path / "gpgmnet-x4.safetensors"
    sd = {k: v.contiguous() for k, v in create("gpgmnet-x4").state_dict().items()}
    save_file(sd, str(old), metadata={"format": "pt", "arch": "gpgmnet-x4", "scale": "4", "colour_domain": "rgb"})
    with pytest.raises(Exception, match="bounded"):  # WeightsError: a one-line usage error
        build_processor(load_preset("sr4-itm-gpgm"), device="cpu", weights=str(old), backend="torch")


@pytest.mark.parametrize("name", SHIPPED)
def test_manifest_entry_is_true(name):
    entry = MANIFEST[name]
    path = ENGINES / name
    assert sha256_file(path) == entry["sha256"]
    spec = get_spec(entry["arch"])
    assert spec.params == entry["parameters"] and spec.scale == entry["scale"]
    model = load_model(entry["arch"], str(path))  # strict load
    assert sum(p.numel() for p in model.parameters()) == entry["parameters"]
    preset = load_preset(entry["preset"]).with_style(entry["style"])
    assert preset.model.arch == entry["arch"] and preset.model.weights == name
    assert find_weights(preset) is not None and find_weights(preset).name == name
    prov, m = entry["provenance"], entry["metrics"]
    assert prov["data"] and prov["recipe"] and prov["steps"] > 0 and "seed" in prov and prov["wall_time_s"] > 0
    assert m["passes_bar"] is True
    assert m["psnr_db"] - m["baseline_psnr_db"] >= 1.0 and m["delta_e_itp"] < m["baseline_delta_e_itp"]


def test_weights_are_package_data():
    import tomllib as _t

    data = _t.loads((REPO / "pyproject.toml").read_text())
    assert "*.safetensors" in data["tool"]["setuptools"]["package-data"]["hdrvideo.engines"]
    assert any(d.resolve() == ENGINES.resolve() or (d / SHIPPED[0]).is_file() for d in engines_dirs())


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    photos = SHARED / "data" / "hdr-photos" / "polyhaven"
    if not photos.is_dir():
        pytest.skip("../shared (HDR photographs) is not present")
    from hdrvideo.training.synthesis import build_synthetic_set, standard_test_config

    return build_synthetic_set(photos, tmp_path_factory.mktemp("heldout"), standard_test_config())


AGCM = SHARED / "reference" / "agcm" / "AGCM.pth"


def _graded_by_teacher(heldout: Path) -> Path:
    from hdrvideo.training.relabel import relabel_set

    out = heldout.parent / "heldout-real"
    if not (out / "meta.json").exists():
        relabel_set(heldout, out, load_model("agcm", str(AGCM)))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_eval_figures_reproduce_and_pass_the_bar(heldout, name):
    from hdrvideo.training.evaluate import evaluate_preset

    entry = MANIFEST[name]
    data, teacher = heldout, None
    if entry["style"] == "real":  # against the teacher's grade of the same held-out renditions
        data, teacher = _graded_by_teacher(heldout), str(AGCM)
    report = evaluate_preset(entry["preset"], data, device="cpu", style=entry["style"], teacher=teacher)
    assert report["images"] == entry["metrics"]["images"] == 72
    assert report["weights_sha256"] == entry["sha256"]
    model, base = report["metrics"][entry["preset"]], report["metrics"]["bt2408"]
    assert model["psnr"] == pytest.approx(entry["metrics"]["psnr_db"], abs=0.02)
    assert model["delta_e_itp"] == pytest.approx(entry["metrics"]["delta_e_itp"], abs=0.05)
    assert base["psnr"] == pytest.approx(entry["metrics"]["baseline_psnr_db"], abs=0.02)
    assert report["passes_bar"] is True
    assert model["psnr"] - base["psnr"] >= 1.0 and model["delta_e_itp"] < base["delta_e_itp"]
    if entry["style"] == "real":  # the real style's own bar, against the teacher's grade
        from hdrvideo.training.evaluate import passes_real_bar

        teacher_label = "agcm" + ("+bicubic" if entry["scale"] > 1 else "")
        assert passes_real_bar(model, entry["scale"], report["metrics"][teacher_label])
        assert report["metrics"][teacher_label]["psnr"] == pytest.approx(entry["metrics"]["teacher_psnr_db"], abs=0.02)


@pytest.mark.parametrize("name", [n for n in SHIPPED if MANIFEST[n]["scale"] > 1])
def test_no_fixed_subpixel_pattern_on_smooth_gradients(name):
    """An SR network's upsampling (PixelShuffle) can leave the same offset on each sub-pixel
    position of every s×s output block: a fixed checkerboard that flat skies show (the withdrawn
    GPGMNet had ±20 codes). On the smooth banding gradients, each position's mean offset from its
    block's mean stays within 3 10-bit codes of Y' (the IRNet files: ≤ 2.8)."""
    import torch

    from hdrvideo.banding import GRADIENTS, gradient_rgb
    from hdrvideo.standards import KR_KB

    kr, kb = KR_KB["bt2020"]

    model = load_model(None, ENGINES / name).eval()
    s = MANIFEST[name]["scale"]
    for kind in GRADIENTS:
        x = gradient_rgb(kind, 160, 90)  # (1, 3, H, W) R'G'B'
        with torch.inference_mode():
            y = model(x.float())[0]
        luma = (kr * y[0] + (1 - kr - kb) * y[1] + kb * y[2]) * 1023  # BT.2020 Y' in 10-bit codes
        h, w = luma.shape
        blocks = luma[: h // s * s, : w // s * s].reshape(h // s, s, w // s, s)
        phase = (blocks - blocks.mean(dim=(1, 3), keepdim=True)).mean(dim=(0, 2))
        assert float(phase.abs().max()) <= 3.0, (kind, phase)
