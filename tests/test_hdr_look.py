"""The HDR look end to end: hdr-expand, --peak-nits, --sdr-white and --deband on real conversions.

Decoded pixel values, HDR10 metadata and report figures of tiny generated clips.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hdrvideo
from conftest import bars_planes, decode_planes, flat_planes, write_planes_clip
from hdrvideo import colour as C
from hdrvideo.banding import GRADIENTS, cambi, decoded_luma, imageio_ffmpeg_exe, step_height, write_gradient_clip
from hdrvideo.media.probe import probe
from hdrvideo.pipeline import ConvertOptions, Pipeline
from hdrvideo.stages import Deband, Dither, PeakRollOff, ScaleLight

GREY18 = int(round(16 + 219 * float(C.bt709_oetf(torch.tensor(0.18, dtype=torch.float64)))))  # code 106
RED = (63, 102, 240)
BARS = [(235, 128, 128), (GREY18, 128, 128), RED, (16, 128, 128)]  # white, 18 % grey, red, black
FAST = {"crf": 4.0, "x265_preset": "ultrafast"}


@pytest.fixture(scope="module")
def bars_clip(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("look")
    return write_planes_clip(d / "bars.mkv", [bars_planes(128, 64, BARS)] * 2)


def bar_nits(path: Path) -> list[torch.Tensor]:
    """Linear BT.2020 R, G, B (cd/m²) at the centre of each bar of the first frame."""
    y, cb, cr = (torch.from_numpy(p.astype(np.int32))[None] for p in decode_planes(path, 1)[0])
    rgb = C.planes_to_rgb(y, cb, cr, "bt2020", 10, False, "left", dtype=torch.float64).clamp(0, 1)
    nits = C.pq_decode(rgb)[0]
    w = nits.shape[-1] // len(BARS)
    return [nits[:, 24:40, i * w + w // 2 - 4: i * w + w // 2 + 4].mean(dim=(1, 2)) for i in range(len(BARS))]


def hue(nits: torch.Tensor) -> float:
    ict = C.bt2020_to_ictcp(nits.view(1, 3, 1, 1))[0, :, 0, 0]
    return math.degrees(math.atan2(float(ict[2]), float(ict[1])))


def test_hdr_expand_meets_its_bars(bars_clip, tmp_path):
    out = tmp_path / "expand.mkv"
    report = hdrvideo.convert(bars_clip, out, preset="hdr-expand", **FAST)
    white, grey, red, black = bar_nits(out)
    assert 800.0 <= float(white.max()) <= 1000.0  # SDR white lands at 80–100 % of the 1000 cd/m² peak
    assert 10.0 <= float(grey.mean()) <= 40.0  # an 18 % grey card stays a mid-tone
    assert float(black.max()) < 0.05
    # a saturated red keeps its hue (ICtCp) against its BT.2408 rendering
    ref = C.pq_decode(C.bt2408_sdr_to_pq(C.ycbcr_to_rgb(torch.tensor(
        [(RED[0] - 16) / 219, (RED[1] - 128) / 224, (RED[2] - 128) / 224], dtype=torch.float64).view(1, 3, 1, 1),
        "bt709").clamp(0, 1)))[0, :, 0, 0]
    assert abs((hue(red) - hue(ref) + 180) % 360 - 180) <= 3.0
    assert report.max_cll <= 1000
    h = probe(out).hdr10
    assert h["mastering_max_luminance"] == pytest.approx(1000.0) and h["max_cll"] == report.max_cll
    # the bt2408 preset keeps SDR white at 203 cd/m²
    base = tmp_path / "bt2408.mkv"
    hdrvideo.convert(bars_clip, base, preset="bt2408", **FAST)
    assert float(bar_nits(base)[0].max()) == pytest.approx(203.0, rel=0.03)


@pytest.mark.parametrize("preset,extra", [("bt2408", {"sdr_white": 800.0}), ("hdr-expand", {}), ("itm", {})])
def test_peak_nits_600_sets_st2086_and_bounds_maxcll(bars_clip, tmp_path, preset, extra):
    out = tmp_path / f"{preset}.mkv"
    report = hdrvideo.convert(bars_clip, out, preset=preset, peak_nits=600, **extra, **FAST)
    assert report.max_cll <= 600
    h = probe(out).hdr10
    assert h["mastering_max_luminance"] == pytest.approx(600.0) and h["max_cll"] <= 600
    if preset != "itm":
        assert float(bar_nits(out)[0].max()) >= 0.8 * 600  # white brought to the peak, not far below it


def test_sdr_white_places_reference_white(bars_clip, tmp_path):
    out = tmp_path / "w300.mkv"
    hdrvideo.convert(bars_clip, out, preset="bt2408", sdr_white=300, **FAST)
    assert float(bar_nits(out)[0].max()) == pytest.approx(300.0, rel=0.03)
    # neural presets: the network's output scaled by sdr_white / 203 in linear light
    a, b = tmp_path / "itm203.mkv", tmp_path / "itm406.mkv"
    hdrvideo.convert(bars_clip, a, preset="itm", **FAST)
    hdrvideo.convert(bars_clip, b, preset="itm", sdr_white=406, **FAST)
    grey_a, grey_b = float(bar_nits(a)[1].mean()), float(bar_nits(b)[1].mean())
    assert grey_b / grey_a == pytest.approx(2.0, rel=0.05)


def test_chain_composition(tmp_path):
    from hdrvideo.presets import load_preset
    from hdrvideo.processors import build_processor
    from hdrvideo.stages import build_chain

    bt = build_processor(load_preset("bt2408"), device="cpu")
    names = [s.name for s in build_chain(bt, (64, 36), 1000.0, deband_step=1 / 219)]
    assert names == ["deband", "processor", "fit", "dither"]  # white 203 never reaches the roll-off
    assert [s.name for s in build_chain(bt, (64, 36), 1000.0)] == ["processor", "fit"]
    ex = build_processor(load_preset("hdr-expand"), device="cpu")
    chain = build_chain(ex, (64, 36), 1000.0)
    assert chain[-1].name == "peak-roll-off" and chain[-1].source_peak == pytest.approx(1000.0)
    # a processor graded to 203 cd/m² white (the networks) gets a linear-light scaling stage
    class Net:
        scale, sdr_white, max_nits = 1, 203.0, 10000.0

    chain = build_chain(Net(), (64, 36), 600.0, sdr_white=300.0)
    scale = [s for s in chain if isinstance(s, ScaleLight)]
    assert len(scale) == 1 and scale[0].factor == pytest.approx(300 / 203)
    assert isinstance(chain[-1], PeakRollOff) and chain[-1].target_nits < 600.0


def test_deband_auto_only_for_8_bit_sources(tmp_path):
    src8 = write_planes_clip(tmp_path / "a.mkv", [flat_planes(64, 36, (100, 128, 128))])
    ten = tuple(p.astype(np.uint16) * 4 for p in flat_planes(64, 36, (100, 128, 128)))
    src10 = write_planes_clip(tmp_path / "b.mkv", [ten], pix_fmt="yuv420p10le")
    dst = tmp_path / "o.mkv"
    plan8 = Pipeline(src8, dst).plan()
    assert plan8.deband_step == pytest.approx(1 / 219)
    assert Pipeline(src10, dst).plan().deband_step is None
    assert Pipeline(src10, dst, ConvertOptions(deband="on")).plan().deband_step == pytest.approx(1 / 876)
    assert Pipeline(src8, dst, ConvertOptions(deband="off")).plan().deband_step is None
    with pytest.raises(hdrvideo.UsageError, match="--deband"):
        Pipeline(src8, dst, ConvertOptions(deband="maybe")).plan()
    with pytest.raises(hdrvideo.UsageError, match="--peak-nits"):
        Pipeline(src8, dst, ConvertOptions(peak_nits=20000)).plan()
    with pytest.raises(hdrvideo.UsageError, match="--sdr-white"):
        Pipeline(src8, dst, ConvertOptions(sdr_white=0)).plan()


@pytest.mark.parametrize("kind", list(GRADIENTS))
def test_deband_removes_banding_end_to_end(tmp_path, kind):
    src = write_gradient_clip(tmp_path / f"{kind}.mkv", kind, 256, 128, frames=2)
    axis = GRADIENTS[kind][0]
    steps = {}
    for mode in ("auto", "off"):
        out = tmp_path / f"{kind}-{mode}.mkv"
        hdrvideo.convert(src, out, preset="bt2408", deband=mode, crf=2.0, x265_preset="ultrafast")
        steps[mode] = np.mean([step_height(y, axis) for y in decoded_luma(out)])
    assert steps["auto"] <= 1.5, steps
    if kind == "dark":  # the expanded 8-bit staircase of the shadows
        assert steps["off"] >= 3.0, steps


@pytest.mark.skipif(imageio_ffmpeg_exe() is None, reason="needs the FFmpeg of imageio-ffmpeg (libvmaf CAMBI)")
def test_cambi_of_a_dark_gradient(tmp_path):
    src = write_gradient_clip(tmp_path / "dark.mkv", "dark", 320, 180, frames=2)
    scores = {}
    for mode in ("auto", "off"):
        out = tmp_path / f"dark-{mode}.mkv"
        hdrvideo.convert(src, out, preset="bt2408", deband=mode, crf=2.0, x265_preset="ultrafast")
        scores[mode] = cambi(out)
    assert scores["auto"] <= 5.0 < scores["off"], scores


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hdrvideo.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_options_and_presets_listing(bars_clip, tmp_path):
    out = tmp_path / "cli.mkv"
    proc = run_cli("convert", str(bars_clip), "-o", str(out), "--preset", "hdr-expand", "--peak-nits", "600",
                   "--sdr-white", "250", "--deband", "off", "--crf", "4", "--x265-preset", "ultrafast", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["max_cll"] <= 600 and "250" in report["processor"] and "600" in report["processor"]
    assert probe(out).hdr10["mastering_max_luminance"] == pytest.approx(600.0)
    bad = run_cli("convert", str(bars_clip), "-o", str(tmp_path / "bad.mkv"), "--peak-nits", "0")
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.returncode == 2 and len(lines) == 1 and "--peak-nits" in lines[0]
    listing = {p["name"]: p for p in json.loads(run_cli("presets", "--json").stdout)}
    assert listing["hdr-expand"]["processor"] == "hdr-expand"
    assert listing["bt2408"]["peak_nits"] == 1000.0 and listing["bt2408"]["sdr_white"] == 203.0
    assert listing["itm"]["deband"] == "auto"
    text = run_cli("presets").stdout
    assert "hdr-expand" in text and "peak" in text


def test_preset_toml_keys(tmp_path):
    from hdrvideo.presets import load_preset

    f = tmp_path / "mine.toml"
    f.write_text('processor = "hdr-expand"\nsdr_white = 150.0\ndeband = "off"\n'
                 '[mastering]\nmax_luminance = 2000.0\n[expand]\nknee = 0.7\nsaturation = 0.0\n')
    p = load_preset(f)
    assert (p.sdr_white, p.deband, p.mastering.max_luminance, p.expand.knee, p.expand.saturation) == (
        150.0, "off", 2000.0, 0.7, 0.0)
    for bad, needle in (('deband = "sometimes"\n', "deband"), ('[expand]\nknee = 1.5\n', "knee"),
                        ('[expand]\ngamma = 2\n', "unknown key")):
        f.write_text('processor = "hdr-expand"\n' + bad)
        with pytest.raises(hdrvideo.UsageError, match=needle):
            load_preset(f)


def test_batch_manifest_carries_the_options(tmp_path, bars_clip):
    from hdrvideo.farm.batch import load_manifest

    m = tmp_path / "jobs.csv"
    m.write_text(f'input,output,preset,peak_nits,options\n{bars_clip},{tmp_path / "o.mkv"},hdr-expand,600,'
                 '"{""sdr_white"": 250, ""deband"": ""off""}"\n')
    (job,) = load_manifest(m)
    opts = Pipeline(job.input, job.output, ConvertOptions(preset=job.preset), **job.options).options
    assert (opts.peak_nits, opts.sdr_white, opts.deband) == (600, 250, "off")


@pytest.mark.skipif(imageio_ffmpeg_exe() is None, reason="needs the FFmpeg of imageio-ffmpeg (libplacebo)")
def test_eval_compares_with_libplacebo(tmp_path):
    from hdrvideo.training import libplacebo
    from hdrvideo.training.evaluate import evaluate_preset
    from hdrvideo.training.imageio import write_png

    if not libplacebo.available():
        pytest.skip("no Vulkan device for libplacebo (e.g. Mesa lavapipe)")
    rng = np.random.default_rng(0)
    for sub in ("test_sdr", "test_hdr"):
        (tmp_path / sub).mkdir()
    for i in range(2):
        sdr = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        sdr[:8] = 255  # SDR white
        write_png(tmp_path / "test_sdr" / f"f{i}.png", sdr)
        write_png(tmp_path / "test_hdr" / f"f{i}.png", rng.integers(0, 40000, (24, 32, 3), dtype=np.uint16))
    rep = evaluate_preset("hdr-expand", tmp_path, compare_with=("libplacebo",))
    assert set(rep["metrics"]) == {"hdr-expand", "bt2408", "libplacebo", "libplacebo+roll-off"}
    # libplacebo, as FFmpeg runs it, sends SDR white towards 10 000 cd/m²; rolled off, to ≤ 1000
    white = torch.full((1, 3, 8, 8), 1.0)
    raw = C.pq_decode(libplacebo.inverse_tone_map(white).double())
    assert float(raw.min()) > 5000.0
    assert float(C.pq_decode(libplacebo.inverse_tone_map(white, peak=1000.0).double()).max()) <= 1000.0 + 1e-3


def test_encoder_overshoot_is_capped_at_the_mastering_peak(tmp_path):
    """1-pixel white lines on black, expanded to a 600 cd/m² peak: x265 rings far above the peak
    around them (the report keeps the measured value), MaxCLL is written as the peak."""
    frames = []
    for i in range(3):
        y = np.full((64, 128), 16, np.uint8)
        y[8 + 4 * i: 60: 12, 8:120] = 235
        frames.append((y, np.full((32, 64), 128, np.uint8), np.full((32, 64), 128, np.uint8)))
    src = write_planes_clip(tmp_path / "lines.mkv", frames)
    out = tmp_path / "lines.hdr10.mkv"
    report = hdrvideo.convert(src, out, preset="hdr-expand", peak_nits=600, crf=18, x265_preset="ultrafast")
    assert report.max_cll_measured > 600 >= report.max_cll >= 570
    h = probe(out).hdr10
    assert h["mastering_max_luminance"] == pytest.approx(600.0) and h["max_cll"] == report.max_cll
