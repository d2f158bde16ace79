"""Styles of the neural presets (issue "the papers' look"): the `style` key and [model.styles]
of a preset, `--style` in convert, eval and filmtest, and `hdrvideo relabel` (a synthetic set
graded by a teacher network: the real style's targets)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import hdrvideo
from hdrvideo import colour
from hdrvideo.cli import _register_optional_commands, app
from hdrvideo.errors import UsageError
from hdrvideo.presets import STYLES, find_weights, list_presets, load_preset

from conftest import write_planes_clip

runner = CliRunner()
_register_optional_commands()


def _preset_file(tmp_path, body: str):
    f = tmp_path / "p.toml"
    f.write_text('name = "p"\nprocessor = "neural"\n' + body, encoding="utf-8")
    return f


def test_style_picks_the_weights_of_model_styles(tmp_path):
    f = _preset_file(tmp_path, 'style = "broadcast"\n[model]\narch = "irnet-2"\n'
                     '[model.styles]\nreal = "r.safetensors"\nbroadcast = "b.safetensors"\n')
    p = load_preset(f)
    assert p.style == "broadcast" and p.model.weights == "b.safetensors"
    real = p.with_style("real")
    assert real.style == "real" and real.model.weights == "r.safetensors"
    # without a style key the first listed style is the preset's
    f = _preset_file(tmp_path, '[model]\narch = "irnet-2"\n[model.styles]\nreal = "r.safetensors"\n')
    assert load_preset(f).style == "real"


@pytest.mark.parametrize("body, message", [
    ('style = "vivid"\n[model]\narch = "irnet-2"\n[model.styles]\nreal = "r.safetensors"\n', "style"),
    ('[model]\narch = "irnet-2"\n[model.styles]\nvivid = "r.safetensors"\n', "style"),
    ('[model]\narch = "irnet-2"\n[model.styles]\nreal = 3\n', "real"),
    ('style = "broadcast"\n[model]\narch = "irnet-2"\n[model.styles]\nreal = "r.safetensors"\n', "not in"),
    ('[model]\narch = "irnet-2"\nweights = "w.safetensors"\n[model.styles]\nreal = "r.safetensors"\n', "not both"),
    ('style = "real"\n[model]\narch = "irnet-2"\nweights = "w.safetensors"\n', "needs"),
])
def test_bad_style_tables_are_one_line_errors(tmp_path, body, message):
    with pytest.raises(UsageError, match=message) as err:
        load_preset(_preset_file(tmp_path, body))
    assert "\n" not in str(err.value)


def test_with_style_refuses_what_a_preset_lacks():
    with pytest.raises(UsageError, match="no styles"):
        load_preset("bt2408").with_style("real")
    itm = load_preset("itm")
    missing = [s for s in STYLES if s not in itm.model.styles]
    for s in missing:
        with pytest.raises(UsageError, match=f"no '{s}' style"):
            itm.with_style(s)


def test_candidate_weights_of_a_style_not_shipped_yet(tmp_path):
    """eval/filmtest --style real --weights W judge a file for a style the preset does not ship yet;
    without the file, and for a style that does not exist, the preset still refuses."""
    sr4 = load_preset("sr4-itm")
    assert "real" not in sr4.model.styles
    with pytest.raises(UsageError, match="no 'real' style"):
        sr4.with_style("real")
    cand = str(tmp_path / "candidate.safetensors")
    p = sr4.with_style("real", cand)
    assert p.style == "real" and p.model.weights == cand
    assert sr4.with_style("broadcast", cand).model.weights == cand
    with pytest.raises(UsageError, match="no 'sepia' style"):
        sr4.with_style("sepia", cand)


def test_every_neural_irnet_preset_lists_its_styles_and_ships_its_default():
    for p in list_presets():
        if p.processor != "neural" or p.model.arch in ("agcm", "gpgmnet-x4"):
            continue
        assert p.model.styles and p.style in p.model.styles, p.name
        assert find_weights(p) is not None, p.name
        for s in p.model.styles:
            assert find_weights(p.with_style(s)) is not None, (p.name, s)


def _clip(tmp_path):
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(2):
        y = np.clip(rng.normal(110, 20, (32, 64)), 16, 235).astype(np.uint8)
        frames.append((y, np.full((16, 32), 120, np.uint8), np.full((16, 32), 136, np.uint8)))
    return write_planes_clip(tmp_path / "in.mkv", frames)


def test_convert_style_option(tmp_path):
    src = _clip(tmp_path)
    itm = load_preset("itm")
    style = itm.style
    rep = hdrvideo.convert(src, tmp_path / "a.mkv", preset="itm", style=style, backend="torch",
                           x265_preset="ultrafast")
    assert rep.style == style
    assert rep.warnings == [] or not any("--style" in w for w in rep.warnings)
    # a classical preset has no styles: one warning, and the conversion runs
    rep = hdrvideo.convert(src, tmp_path / "b.mkv", preset="bt2408", style="real", x265_preset="ultrafast")
    assert rep.style == "" and any("--style is ignored" in w for w in rep.warnings)
    with pytest.raises(UsageError, match="--style"):
        hdrvideo.convert(src, tmp_path / "c.mkv", preset="itm", style="vivid")


def test_cli_style_choice_is_checked(tmp_path):
    src = _clip(tmp_path)
    r = runner.invoke(app, ["convert", str(src), "-o", str(tmp_path / "x.mkv"), "--preset", "itm", "--style", "vivid"])
    assert r.exit_code == 2 and "vivid" in r.output
    assert not (tmp_path / "x.mkv").exists()


# -- relabel ----------------------------------------------------------------------------------


def _fake_cache(tmp_path, n=3, k=2, size=32):
    """A tiny cache in the layout of hdrvideo.training.synthesis (graded HDR + two renditions)."""
    from hdrvideo.training.synthesis import bicubic_downscale, draw_sdr_recipe, quantize, sdr_rendition

    rng = np.random.default_rng(0)
    d = tmp_path / "cache"
    d.mkdir()
    hdr, sdr, views = [], [], []
    for i in range(n):
        nits = torch.from_numpy(rng.uniform(0.05, 600, (3, size, size)))
        code = quantize(colour.pq_encode(nits), 16)
        graded = colour.pq_decode(code.double() / 65535.0)
        recipes = [draw_sdr_recipe(rng) for _ in range(k)]
        hdr.append(code.numpy().astype(np.uint16))
        sdr.append([quantize(sdr_rendition(graded, r).float(), 8) for r in recipes])
        views.append({"scene": f"s{i}", "top": 0, "left": 0, "key_nits": 20.0,
                      "variants": [{"method": r.method, "params": r.params} for r in recipes],
                      "crf": {"x1": [-1] * k, "x2": [-1] * k}})
    np.save(d / "hdr.npy", np.stack(hdr))
    x1 = np.stack([np.stack([s.numpy() for s in v]) for v in sdr])
    np.save(d / "sdr_x1.npy", x1)
    x2 = quantize(bicubic_downscale(torch.from_numpy(x1).float().flatten(0, 1) / 255.0, 2), 8)
    np.save(d / "sdr_x2.npy", x2.numpy().reshape(n, k, 3, size // 2, size // 2))
    (d / "meta.json").write_text(json.dumps({"config": {}, "scenes": [], "held_out": [], "views": views}))
    return d


class _Teacher(torch.nn.Module):
    """A stand-in grade: PQ of 400 cd/m² × the SDR signal squared (anything per-image and fixed)."""

    def forward(self, x):
        return colour.pq_encode(400.0 * x.double() ** 2).float()


def test_relabel_targets_are_the_teachers_grade_of_each_rendition(tmp_path):
    from hdrvideo.training.datasets import SynthPairs
    from hdrvideo.training.relabel import relabel_set

    src = _fake_cache(tmp_path)
    out = relabel_set(src, tmp_path / "real", _Teacher(), "stand-in")
    pairs1, pairs2 = SynthPairs(out, 1), SynthPairs(out, 2)
    assert len(pairs1) == 6 and pairs1.variants(0) == 1  # 3 views × 2 renditions, one each
    x1 = np.load(src / "sdr_x1.npy")
    x2 = np.load(src / "sdr_x2.npy")
    for i in range(6):
        view, variant = divmod(i, 2)
        sdr, hdr = pairs1.get(i)
        assert np.array_equal(sdr.numpy(), x1[view, variant])
        assert np.array_equal(pairs2.get(i)[0].numpy(), x2[view, variant])
        expect = _Teacher()(torch.from_numpy(x1[view, variant]).float()[None] / 255.0)[0]
        assert (hdr.float() / 65535.0 - expect).abs().max() < 1.0 / 65535 + 1e-6
    meta = json.loads((out / "meta.json").read_text())
    assert meta["target"]["teacher"] == "stand-in"
    assert [v["source_variant"] for v in meta["views"]] == [0, 1] * 3


def test_relabel_cli_refuses_bad_input_in_one_line(tmp_path):
    r = runner.invoke(app, ["relabel", str(tmp_path), str(tmp_path / "o"), "--teacher", str(tmp_path / "none.pth")])
    assert r.exit_code == 2 and "not a synthetic cache" in r.output


def test_real_style_is_brighter_and_stays_within_the_mastering_peak(tmp_path):
    """itm's default (real) grade: brighter than broadcast on the same clip, its highlights rolled
    off under --peak-nits like every preset (MaxCLL ≤ the ST 2086 maximum), --sdr-white scaling it."""
    from conftest import decode_planes

    src = _clip(tmp_path)
    reps, means = {}, {}
    for style in ("real", "broadcast"):
        reps[style] = hdrvideo.convert(src, tmp_path / f"{style}.mkv", preset="itm", style=style, backend="torch",
                                       crf=0, x265_preset="ultrafast", peak_nits=600)
        means[style] = float(np.mean([f[0].astype(np.float64).mean() for f in decode_planes(tmp_path / f"{style}.mkv")]))
    assert reps["real"].style == "real" and reps["broadcast"].style == "broadcast"
    assert means["real"] > means["broadcast"] + 8, means  # 10-bit PQ luma codes
    for rep in reps.values():
        assert 0 < rep.max_cll <= 600
    dim = hdrvideo.convert(src, tmp_path / "dim.mkv", preset="itm", backend="torch", crf=0,
                           x265_preset="ultrafast", sdr_white=100)
    dim_mean = float(np.mean([f[0].astype(np.float64).mean() for f in decode_planes(tmp_path / "dim.mkv")]))
    assert dim.style == "real" and dim_mean < means["real"] - 8


def test_auto_gives_one_style_whatever_the_input_height():
    auto = load_preset("auto")
    picks = [auto.resolve(h) for h in (540, 1080, 2160)]
    assert [p.name for p in picks] == ["sr4-itm", "sr2-itm", "itm"]
    assert {p.style for p in picks} == {auto.style}
    assert {find_weights(p).name for p in picks[-1:]} == {"irnet-2.safetensors"}  # itm, broadcast
