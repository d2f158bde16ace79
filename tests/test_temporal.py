"""Temporal smoothing of network statistics, scene cuts, memory-budget tiling, border padding,
the peak roll-off and GPGMNet's bounded modulation (issue "real films")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import hdrvideo
from hdrvideo import colour as C
from hdrvideo.models import create, load_model, save_weights
from hdrvideo.presets import load_preset
from hdrvideo.processors import build_processor
from hdrvideo.processors.neural import NeuralProcessor
from hdrvideo.processors.temporal import SceneCutDetector, TemporalContext
from hdrvideo.stages import SDR, Frames
from hdrvideo.training.film import film_clips

from conftest import decode_planes, write_planes_clip


@pytest.fixture(scope="module")
def clips():
    return {c.name: c for c in film_clips(height=48, width=80, frames=12)}


def _weights(tmp_path, arch="irnet-2", scale_by=0.1, **kw):
    torch.manual_seed(0)
    model = create(arch, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale_by)
    return str(save_weights(model, tmp_path / f"{arch}.safetensors"))


# -- scene cuts -------------------------------------------------------------------------


def test_scene_cuts_found_on_hard_cuts_only(clips):
    found = {name: [i for i, c in enumerate(SceneCutDetector()(clip.frames)) if c] for name, clip in clips.items()}
    assert found["cut"] == [0, 4, 8]  # day → night → day
    for name in ("fade-out", "fade-in", "dissolve", "pan", "grain", "letterbox", "black"):
        assert found[name] == [0], name  # only the start of the stream


def test_fades_are_told_from_motion_and_grain(clips):
    """A fade's frames differ from their predecessors by a global gain (weight near 1); a pan
    into the light, grain, a still hold and a cut do not (weight 0); a dissolve is in between."""
    weights = {name: SceneCutDetector().analyse(clip.frames)[1] for name, clip in clips.items()}
    for name in ("fade-out", "fade-in"):
        fading, held = weights[name][1: 12], weights[name][12:]
        assert min(fading) >= 0.8 and max(held) == 0.0, name
    for name in ("pan", "grain", "cut", "letterbox", "black"):
        assert max(weights[name]) == 0.0, name
    mixing = weights["dissolve"][4: 14]
    assert 0.0 < max(mixing) < 0.9


def test_scene_cuts_do_not_depend_on_batching(clips):
    frames = clips["cut"].frames
    whole = SceneCutDetector()(frames)
    det = SceneCutDetector()
    pieces = [c for i in range(0, len(frames), 3) for c in det(frames[i: i + 3])]
    assert pieces == whole


# -- the smoothing itself ------------------------------------------------------------------


def test_temporal_context_is_an_ema_reset_at_cuts():
    tc = TemporalContext(time_constant=4.0)
    a = math.exp(-1 / 4.0)
    ctx = (torch.tensor([[1.0], [3.0], [3.0], [10.0]]),)
    out = tc(ctx, [True, False, False, True])[0].flatten().tolist()
    s1 = a * 1.0 + (1 - a) * 3.0
    assert out == pytest.approx([1.0, s1, a * s1 + (1 - a) * 3.0, 10.0])
    # the state carries into the next batch
    nxt = tc((torch.tensor([[0.0]]),), [False])[0].item()
    assert nxt == pytest.approx(a * 10.0)


def test_temporal_context_follows_fades_by_their_weight():
    tc = TemporalContext(time_constant=4.0)
    a = math.exp(-1 / 4.0)
    ctx = (torch.tensor([[1.0], [3.0], [5.0], [7.0]]),)
    out = tc(ctx, [True, False, False, False], [0.0, 1.0, 0.5, 0.0])[0].flatten().tolist()
    s2 = 0.5 * a * 3.0 + (1 - 0.5 * a) * 5.0
    assert out == pytest.approx([1.0, 3.0, s2, a * s2 + (1 - a) * 7.0])


def test_brightness_holds_still_after_a_fade_in(clips):
    """The picture fades in and holds: with the statistics following the fade, the shipped itm
    output's mean stays within 1 % through the hold (a plain EMA drifted 40 % over a second)."""
    from hdrvideo.training.film import chain_runner, display_luminance, run_processor_on_clip

    clip = clips["fade-in"]
    process, _ = chain_runner(load_preset("itm"))
    mean = display_luminance(run_processor_on_clip(process, clip)).mean(dim=(-2, -1))
    held = mean[-clip.hold - 1:]
    assert float((held / held[0] - 1).abs().max()) < 0.01
    # and the fade itself is followed: the output rises at least 10-fold with the input's 20
    assert float(mean[-clip.hold - 1] / mean[0]) > 10


def _process(proc, frames, batch):
    outs = []
    for i in range(0, frames.shape[0], batch):
        x = frames[i: i + batch]
        f = Frames(x, list(range(i, i + x.shape[0])), SDR, [i + j == 0 for j in range(x.shape[0])])
        outs.append(proc.process(f))
    return torch.cat(outs)


def test_smoothed_output_is_the_same_for_any_batching_tiling_and_backend(tmp_path, clips):
    pytest.importorskip("onnxruntime")
    w = None  # the shipped weights: statistics that matter
    preset = load_preset("itm")
    frames = clips["grain"].frames[:6]
    ref = _process(build_processor(preset, "cpu", w, "torch", temporal_frames=3.0), frames, 6)
    by1 = _process(build_processor(preset, "cpu", w, "torch", temporal_frames=3.0), frames, 1)
    tiled = build_processor(preset.replace(tile=32), "cpu", w, "torch", temporal_frames=3.0)
    ort = build_processor(preset, "cpu", w, "onnxruntime", temporal_frames=3.0)
    assert (by1 - ref).abs().max() < 1e-5
    assert (_process(tiled, frames, 2) - ref).abs().max() < 1e-4
    assert (_process(ort, frames, 3) - ref).abs().max() < 1e-4
    # and smoothing changes something: the per-frame statistics of a grainy shot differ
    plain = build_processor(preset, "cpu", w, "torch")(frames)
    assert (plain - ref).abs().max() > 1e-6


def test_convert_temporal_smoothing_option(tmp_path):
    frames = []
    rng = np.random.default_rng(0)
    for _ in range(4):
        y = np.clip(rng.normal(120, 6, (32, 64)), 16, 235).astype(np.uint8)
        frames.append((y, np.full((16, 32), 120, np.uint8), np.full((16, 32), 136, np.uint8)))
    src = write_planes_clip(tmp_path / "in.mkv", frames)
    w = None  # the shipped weights
    outs = {}
    for mode in ("auto", "off"):
        # the broadcast weights: statistics that visibly matter on a grainy grey shot (the real
        # style's grain-stability training left its output nearly independent of them)
        rep = hdrvideo.convert(src, tmp_path / f"{mode}.mkv", preset="itm", style="broadcast", weights=w,
                               backend="torch", temporal_smoothing=mode, crf=0, x265_preset="ultrafast")
        assert ("smoothed" in rep.processor) == (mode == "auto")
        outs[mode] = decode_planes(tmp_path / f"{mode}.mkv")
    first = [np.array_equal(a[0], b[0]) for a, b in zip(outs["auto"], outs["off"])]
    assert first[0]  # the first frame of a shot is exact either way
    assert not all(first)
    with pytest.raises(hdrvideo.UsageError, match="temporal_smoothing"):
        hdrvideo.convert(src, tmp_path / "x.mkv", preset="itm", weights=w, temporal_smoothing="sometimes")


# -- memory-budget tiling --------------------------------------------------------------------


def test_tile_choice_follows_the_memory_limit():
    class _B:
        device = torch.device("cpu")

    proc = NeuralProcessor(_B(), scale=4, memory_limit=4 * 7000 * 96 * 96, bytes_per_pixel=7000)
    assert proc.tile_for(1, 96, 96) == 0  # fits
    t = proc.tile_for(1, 540, 960)
    assert 64 <= t < 540 and 7000 * t * t <= proc.memory_limit
    assert proc.tile_for(4, 540, 960) < t  # a bigger batch gets smaller tiles
    assert NeuralProcessor(_B(), 4, memory_limit=0, bytes_per_pixel=7000).tile_for(1, 540, 960) == 0
    assert NeuralProcessor(_B(), 4, tile=128, memory_limit=0).tile_for(1, 540, 960) == 128


@pytest.mark.parametrize("arch", ["irnet-2", "irnet-5-x4"])
def test_tiled_context_is_exact(arch):
    torch.manual_seed(1)
    model = create(arch).eval()
    x = torch.rand(2, 3, 37, 53)
    with torch.inference_mode():
        whole = model.global_context(x)
        tiled = model.global_context(x, tile=16)
    assert max(float((a - b).abs().max()) for a, b in zip(whole, tiled)) < 1e-5


def test_memory_limited_conversion_matches_whole_frame(tmp_path):
    w = _weights(tmp_path, "irnet-5-x4")
    preset = load_preset("sr4-itm")
    x = film_clips(height=40, width=72, frames=2)[0].frames
    whole = build_processor(preset, "cpu", w, "torch", memory_limit=0)(x)
    small = build_processor(preset, "cpu", w, "torch", memory_limit=7000 * 2 * 32 * 32)
    assert small.tile_for(2, 40, 72) > 0
    assert (small(x) - whole).abs().max() < 1e-4


# -- border padding ----------------------------------------------------------------------------


def test_replicate_padding_keeps_flat_frames_flat_to_the_edge(tmp_path):
    torch.manual_seed(0)
    for mode, flat in (("replicate", True), ("zeros", False)):
        m = create("irnet-2", padding_mode=mode).eval()
        with torch.inference_mode():
            y = m(torch.full((1, 3, 24, 40), 0.02))
        assert (float((y.amax(dim=(2, 3)) - y.amin(dim=(2, 3))).max()) < 1e-6) == flat, mode
    path = save_weights(create("irnet-2", padding_mode="replicate"), tmp_path / "r.safetensors")
    assert load_model(None, path).padding_mode == "replicate"
    plain = tmp_path / "plain.pth"
    torch.save(create("irnet-2").state_dict(), plain)
    assert load_model("irnet-2", plain).padding_mode == "zeros"  # official checkpoints: the papers' layout


# -- peak roll-off -----------------------------------------------------------------------------


def test_pq_roll_off_bounds_max_rgb_and_keeps_hue():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    y = C.pq_roll_off(x, 1000.0)
    lin_x, lin_y = C.pq_decode(x), C.pq_decode(y)
    assert float(lin_y.amax()) <= 1000.0 + 1e-6
    below = C.pq_decode(x.amax(dim=1)) <= C.pq_roll_off_knee_nits(1000.0)
    assert torch.equal(y.permute(1, 0, 2, 3)[:, below], x.permute(1, 0, 2, 3)[:, below])
    # every component scaled by the same ratio: chromaticity (hue) unchanged
    ratio = lin_y / lin_x.clamp(min=1e-9)
    assert float((ratio - ratio.mean(dim=1, keepdim=True)).abs().max()) < 1e-6
    # monotonic in the input's brightness
    ramp = C.pq_encode(torch.logspace(0, 4, 200, dtype=torch.float64)).view(1, 1, 1, -1).expand(1, 3, 1, -1)
    out = C.pq_roll_off(ramp, 600.0)[0, 0, 0]
    assert bool((out.diff() >= 0).all()) and float(C.pq_decode(out).max()) <= 600.0 + 1e-6


def test_bright_network_output_stays_within_the_mastering_peak(tmp_path):
    frames = [(np.full((32, 64), 200, np.uint8), np.full((16, 32), 128, np.uint8), np.full((16, 32), 128, np.uint8))] * 2
    src = write_planes_clip(tmp_path / "in.mkv", frames)
    torch.manual_seed(0)
    model = create("irnet-2")
    with torch.no_grad():
        model.upsampler.bias.fill_(2.0)  # PQ ≥ 1 everywhere: 10 000 cd/m² before the roll-off
    w = save_weights(model, tmp_path / "bright.safetensors")
    rep = hdrvideo.convert(src, tmp_path / "o.mp4", preset="itm", weights=str(w), backend="torch",
                           x265_preset="ultrafast")
    assert 900 <= rep.max_cll <= 1000


# -- GPGMNet -----------------------------------------------------------------------------------


def test_gpgmnet_modulation_is_bounded_for_any_prior():
    torch.manual_seed(0)
    m = create("gpgmnet-x2").eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        ys = [m(x, context=(torch.full((1, 12), v),)) for v in (-1e6, 0.0, 1e6)]
    acts = []
    hooks = [mod.register_forward_hook(lambda _m, _i, o: acts.append(float(o.abs().max())))
             for mod in m.body]
    with torch.inference_mode():
        m(x, context=(torch.full((1, 12), 1e6),))
    for h in hooks:
        h.remove()
    assert all(torch.isfinite(y).all() for y in ys) and max(acts) < 1e4
