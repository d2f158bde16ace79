"""Dequantisation of 8-bit sources (hdrvideo.dequantize, the Deband and Dither stages).

Pure torch, no encoder: the 10-bit PQ output is rounded exactly as the pack step does, so the
step heights measured here are the ones the encoder receives.
"""

import math

import numpy as np
import pytest
import torch

from hdrvideo import colour as C
from hdrvideo.banding import GRADIENTS, gradient_rgb, step_height
from hdrvideo.dequantize import code_step, deband, dither_pattern
from hdrvideo.stages import HDR, SDR, Deband, Dither, Frames

STEP = code_step(8, False)


def through_8bit(rgb: torch.Tensor) -> torch.Tensor:
    """Float BT.709 R'G'B' → 8-bit limited 4:2:0 planes → R'G'B', as the decoder delivers it."""
    y, cb, cr = C.rgb_to_planes(rgb.double(), "bt709", 8, False, "left")
    return C.planes_to_rgb(y, cb, cr, "bt709", 8, False, "left").clamp(0, 1).float()


def luma_codes(rgb: torch.Tensor) -> torch.Tensor:
    return C.rgb_to_ycbcr(rgb.double(), "bt709")[:, 0] * 219.0


def pq10_luma(rgb_sdr: torch.Tensor) -> np.ndarray:
    y, _, _ = C.rgb_to_planes(C.bt2408_sdr_to_pq(rgb_sdr.clamp(0, 1)), "bt2020", 10, False, "left")
    return y[0].numpy()


def test_code_step():
    assert code_step(8, False) == pytest.approx(1 / 219) and code_step(8, True) == pytest.approx(1 / 255)
    assert code_step(10, False) == pytest.approx(1 / 876)


@pytest.mark.parametrize("kind", list(GRADIENTS))
def test_gradients_come_back_smooth_and_each_pixel_stays_in_its_cell(kind):
    truth = gradient_rgb(kind, 256, 128).float()
    x = through_8bit(truth)
    out = deband(x, STEP)
    e_in = luma_codes(x) - luma_codes(truth)
    e_out = luma_codes(out) - luma_codes(truth)
    assert float(e_in.pow(2).mean().sqrt()) == pytest.approx(1 / math.sqrt(12), abs=0.02)
    assert float(e_out.pow(2).mean().sqrt()) < 0.08  # the ramp, not its staircase
    moved = (luma_codes(out) - luma_codes(x)).abs()
    assert float(moved.max()) <= 0.5 + 1e-4  # still quantises to the same 8-bit code
    # chroma is not touched: the correction is added to R', G', B' alike
    d = (out - x).double()
    assert torch.allclose(d[:, 0], d[:, 1], atol=1e-6) and torch.allclose(d[:, 1], d[:, 2], atol=1e-6)
    # expanded into 10-bit PQ: 1-code steps instead of the 8-bit staircase's
    axis = GRADIENTS[kind][0]
    before, after = step_height(pq10_luma(x), axis), step_height(pq10_luma(out), axis)
    assert after <= 1.1 and before >= 1.4, (before, after)


def test_texture_edges_and_flat_areas_are_untouched():
    g = torch.Generator().manual_seed(0)
    h, w = 128, 192
    yy = torch.linspace(0, 1, h).view(h, 1)
    truth = (0.35 + 0.1 * yy).expand(h, w).clone()  # smooth background
    # a textured patch (±4 codes of noise) and a sharp edge to a flat bright area
    truth[32:96, 32:96] += (torch.rand(64, 64, generator=g) - 0.5) * 8 * STEP
    truth[:, 150:] = 0.8
    rgb = truth.expand(1, 3, h, w).clone()
    x = through_8bit(rgb)
    out = deband(x, STEP)
    # texture: bit-identical, so no PSNR is lost there
    assert torch.equal(out[..., 32:96, 32:96], x[..., 32:96, 32:96])
    # the edge and the flat bright area: unchanged within a block of the edge, and the flat
    # area exactly (the smooth surface is the value itself)
    assert torch.equal(out[..., 140:160], x[..., 140:160])
    assert torch.allclose(out[..., 164:], x[..., 164:], atol=1e-7)
    # deterministic, frame by frame
    both = deband(torch.cat([x, x.flip(-1)]), STEP)
    assert torch.equal(both[:1], out) and torch.equal(deband(x, STEP), out)
    # noise is texture everywhere: nothing moves
    noise = through_8bit(torch.rand(1, 3, 64, 64, generator=g))
    assert torch.equal(deband(noise, STEP), noise)


def test_texture_psnr_loss_on_natural_detail_is_within_bar():
    """A 1/f-like texture quantised to 8 bits: debanding costs it ≤ 0.2 dB against the truth."""
    g = torch.Generator().manual_seed(3)
    h = w = 128
    freq = torch.fft.fftfreq(h).view(-1, 1) ** 2 + torch.fft.fftfreq(w).view(1, -1) ** 2
    spectrum = torch.randn(h, w, generator=g, dtype=torch.complex64) / freq.clamp(min=1e-4).sqrt()
    tex = torch.fft.ifft2(spectrum).real
    tex = 0.45 + (tex - tex.mean()) / tex.std() * 12 * STEP  # std 12 codes
    rgb = torch.stack([tex, tex * 0.9, tex * 0.8])[None].clamp(0, 1)
    x = through_8bit(rgb)
    out = deband(x, STEP)

    def psnr(a):
        return 10 * math.log10(1.0 / float((luma_codes(a) / 219 - luma_codes(rgb) / 219).pow(2).mean()))

    assert psnr(out) >= psnr(x) - 0.2


def test_deband_stage_keeps_a_smooth_map_and_works_in_place():
    x = through_8bit(gradient_rgb("sky", 128, 64).float())
    frames = Frames(x.clone(), [0], SDR, [True])
    with torch.inference_mode():
        out = Deband(STEP, "bt709")(frames)
    assert out.smooth is not None and out.smooth.shape == (1, 1, 16, 32)
    assert float(out.smooth.mean()) > 0.9
    assert torch.allclose(out.rgb, deband(x, STEP))


def test_dither_pattern_is_static_small_and_zero_mean():
    p = dither_pattern(64, 96)
    assert torch.equal(p, dither_pattern(64, 96))
    assert float(p.abs().max()) < 1.0 and abs(float(p.mean())) < 0.02
    assert 0.3 < float(p.std()) < 0.5  # triangular on (−1, 1): σ = 1/√6 ≈ 0.41
    # high-frequency: neighbours are decorrelated
    assert abs(float((p[:, 1:] * p[:, :-1]).mean())) < 0.1


def test_dither_changes_luma_only_where_smooth_and_never_black():
    h, w = 64, 96
    nits = torch.full((1, 3, h, w), 50.0, dtype=torch.float64)
    nits[..., :, :16] = 0.0  # a black band
    pq = C.pq_encode(nits).float()
    smooth = torch.ones(1, 1, h // 4, w // 4)
    smooth[..., :, :4] = 0.0  # the deband stage zeroes its map near black
    smooth[..., :8, 12:] = 0.0  # and in textured blocks
    with torch.inference_mode():
        out = Dither()(Frames(pq.clone(), [0], HDR, [True], smooth)).rgb
        y0, cb0, cr0 = C.rgb_to_planes(pq, "bt2020", 10, False, "left")
        y1, cb1, cr1 = C.rgb_to_planes(out, "bt2020", 10, False, "left")
    assert torch.equal(cb0, cb1) and torch.equal(cr0, cr1)
    dy = (y1 - y0).abs()
    assert int(dy.max()) <= 2 and float((dy > 0).float()[..., 40:, 20:].mean()) > 0.3
    assert int(dy[..., :, :16].max()) == 0 and int(dy[..., :32, 48:].max()) == 0
    # without a smooth map (no deband stage) the frames pass as they are
    frames = Frames(pq, [0], HDR, [True])
    assert Dither()(frames) is frames
