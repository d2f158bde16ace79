"""PSNR, SSIM and ΔE_ITP against hand-computed values and colour-science."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hdrvideo import colour as C
from hdrvideo.training import metrics as M


def test_psnr_hand_computed():
    t = torch.zeros(2, 3, 8, 8, dtype=torch.float64)
    p = torch.full_like(t, 0.1)
    p[1] = 0.01
    v = M.psnr(p, t)
    assert v[0].item() == pytest.approx(20.0, abs=1e-9)  # MSE 0.01
    assert v[1].item() == pytest.approx(40.0, abs=1e-9)  # MSE 1e-4
    # all three channels count: an error in one channel only is a third of the MSE
    p2 = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    p2[:, 0] = 0.3
    assert M.psnr(p2, torch.zeros_like(p2)).item() == pytest.approx(10 * math.log10(3 / 0.09), abs=1e-9)


def test_ssim_constant_images_and_identity():
    a, b = 0.6, 0.4
    x = torch.full((1, 3, 16, 16), a)
    y = torch.full((1, 3, 16, 16), b)
    c1 = 0.01**2
    expect = (2 * a * b + c1) / (a * a + b * b + c1)  # zero variances: contrast-structure term = 1
    assert M.ssim(x, y).item() == pytest.approx(expect, abs=1e-6)
    z = torch.rand(1, 3, 20, 24)
    assert M.ssim(z, z).item() == pytest.approx(1.0, abs=1e-9)


def test_ssim_matches_direct_2d_reference():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 24, 30, dtype=torch.float64)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    # straightforward 2-D Gaussian window (Wang et al. 2004), valid region
    ax = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(ax**2) / (2 * 1.5**2))
    k = torch.outer(g, g) / torch.outer(g, g).sum()
    k = k.expand(3, 1, 11, 11)
    f = lambda z: F.conv2d(z, k, groups=3)
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    ref = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    assert torch.allclose(M.ssim(x, y), ref.flatten(2).mean(2).mean(1), atol=1e-10)


def test_delta_e_itp_matches_colour_science():
    colour = pytest.importorskip("colour")
    rng = np.random.default_rng(0)
    a = rng.random((3, 5, 7))
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
    ours = M.delta_e_itp(torch.from_numpy(a), torch.from_numpy(b)).item()

    def ictcp(pq):
        nits = colour.models.eotf_ST2084(pq.transpose(1, 2, 0))
        return colour.RGB_to_ICtCp(nits, method="ITU-R BT.2100-2 PQ")

    ref = colour.difference.delta_E_ITP(ictcp(a), ictcp(b)).mean()
    assert ours == pytest.approx(float(ref), rel=1e-6)


def test_delta_e_itp_zero_and_hand_value():
    x = torch.rand(1, 3, 4, 4)
    assert M.delta_e_itp(x, x).abs().max().item() == 0.0
    # neutral greys: Ct = Cp = 0, so ΔE_ITP = 720·|ΔI| with I = PQ of the (equal) LMS
    g1 = torch.full((1, 3, 2, 2), 0.5, dtype=torch.float64)
    g2 = torch.full((1, 3, 2, 2), 0.6, dtype=torch.float64)
    assert M.delta_e_itp(g1, g2).item() == pytest.approx(720 * 0.1, rel=1e-6)


def test_image_metrics_keys():
    x = torch.rand(2, 3, 16, 16)
    m = M.image_metrics(x + 0.01, x)
    assert set(m) == set(M.METRIC_NAMES) and all(v.shape == (2,) for v in m.values())
