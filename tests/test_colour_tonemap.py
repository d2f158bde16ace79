"""HDR→SDR down-conversion curves of hdrvideo.colour (BT.2446 Method A/C, BT.2390 tone map, filmic).

Anchor values are recomputed here from the equations of Report ITU-R BT.2446-1 (§4.1 Method A,
§6.1.4 Method C, whose printed constants k1..k4 are checked for consistency) with plain Python
floats, independently of the torch implementation.
"""

import math

import pytest
import torch

from hdrvideo import colour as C


def grey(nits, n=1):
    return torch.full((3, 1, n), float(nits), dtype=torch.float64)


def ramp(lo, hi, n=2001):
    v = torch.linspace(lo, hi, n, dtype=torch.float64)
    return v.view(1, 1, n).expand(3, 1, n).clone()


# ---------------------------------------------------------------- BT.2446 Method A (§4.1)


def _method_a_scalar(nits, l_hdr=1000.0, l_sdr=100.0):
    """Grey-axis BT.2446-1 §4.1 in plain floats: returns Y'_SDR (the γ 2.4 SDR signal)."""
    y = (nits / l_hdr) ** (1 / 2.4)
    rho_h = 1 + 32 * (l_hdr / 10000) ** (1 / 2.4)
    rho_s = 1 + 32 * (l_sdr / 10000) ** (1 / 2.4)
    yp = math.log(1 + (rho_h - 1) * y) / math.log(rho_h)
    if yp <= 0.7399:
        yc = 1.077 * yp
    elif yp < 0.9909:
        yc = -1.1510 * yp**2 + 2.7811 * yp - 0.6302
    else:
        yc = 0.5 * yp + 0.5
    return (rho_s**yc - 1) / (rho_s - 1)


@pytest.mark.parametrize("nits", [0.5, 10.0, 26.0, 100.0, 203.0, 500.0, 1000.0])
def test_bt2446a_grey_matches_equations(nits):
    out = C.bt2446a_tone_map(grey(nits))
    assert torch.allclose(out, torch.full_like(out, _method_a_scalar(nits)), atol=1e-9)


def test_bt2446a_anchor_points():
    # peak: L_HDR maps to 100% SDR; black stays black
    assert C.bt2446a_tone_map(grey(1000.0))[0, 0, 0].item() == pytest.approx(1.0, abs=1e-9)
    assert C.bt2446a_tone_map(grey(0.0)).abs().max().item() < 1e-9
    # HDR Reference White (BT.2408: 203 cd/m²) → Y'_SDR ≈ 0.687 (§4.1 equations)
    assert C.bt2446a_tone_map(grey(203.0))[0, 0, 0].item() == pytest.approx(0.68686, abs=2e-4)
    # ρ_HDR for 1000 cd/m² is 13.2598 and ρ_SDR for 100 cd/m² is 5.6969 (§4.1)
    assert 1 + 32 * 0.1 ** (1 / 2.4) == pytest.approx(13.2598, abs=1e-4)
    assert 1 + 32 * 0.01 ** (1 / 2.4) == pytest.approx(5.6969, abs=1e-4)


def test_bt2446a_knee_segments_join():
    # the three segments of the §4.1 knee meet at Y'_p = 0.7399 and 0.9909 (to the printed precision)
    a = 1.077 * 0.7399
    b = -1.1510 * 0.7399**2 + 2.7811 * 0.7399 - 0.6302
    assert abs(a - b) < 1e-3
    c = -1.1510 * 0.9909**2 + 2.7811 * 0.9909 - 0.6302
    assert abs(c - (0.5 * 0.9909 + 0.5)) < 1e-4


def test_bt2446a_monotonic_and_colour_correction():
    out = C.bt2446a_tone_map(ramp(0, 1000))[1, 0]
    assert (out.diff() >= -1e-7).all()
    # a saturated red: luma is lowered by 0.1·C'r (Y'_TMO = Y'_SDR − max(0.1·C'r,TMO, 0))
    red = torch.tensor([500.0, 20.0, 20.0], dtype=torch.float64).view(3, 1, 1)
    sdr = C.bt2446a_tone_map(red)
    y = C.rgb_to_ycbcr(sdr, "bt2020")[0].item()
    rp = (red / 1000) ** (1 / 2.4)
    y_in, _, cr_in = C.rgb_to_ycbcr(rp, "bt2020")[:, 0, 0].tolist()
    y_sdr = _method_a_scalar(1000 * y_in**2.4)
    f = y_sdr / (1.1 * y_in)
    assert y == pytest.approx(y_sdr - 0.1 * f * cr_in, abs=1e-9)


# ---------------------------------------------------------------- BT.2446 Method C (§6.1)


def test_bt2446c_printed_constants_are_consistent():
    y_ip, k2, k4 = C.bt2446c_curve_parameters()
    assert y_ip == pytest.approx(58.5 / 0.83802)
    assert k2 == pytest.approx(C.BT2446C_K2, rel=1e-3)
    assert k4 == pytest.approx(C.BT2446C_K4, rel=1e-3)


def test_bt2446c_curve_anchor_points():
    y_ip = 58.5 / 0.83802
    lo = C.bt2446c_curve(torch.tensor([y_ip * 0.999], dtype=torch.float64)).item()
    hi = C.bt2446c_curve(torch.tensor([y_ip * 1.001], dtype=torch.float64)).item()
    assert lo == pytest.approx(58.5 * 0.999, rel=1e-6)  # linear segment k1·Y
    assert hi == pytest.approx(58.5, rel=2e-3)  # continuous at the inflection point
    # HDR Reference White 203 → k2·ln(203/Y_ip − k3) + k4 ≈ 90.7 cd/m² (≈ 96% SDR signal)
    ref = C.bt2446c_curve(torch.tensor([203.0], dtype=torch.float64)).item()
    assert ref == pytest.approx(15.09968 * math.log(203 / y_ip - 0.74204) + 78.99439, rel=1e-9)
    assert ref == pytest.approx(90.66, abs=0.05)
    # 1000 cd/m² lands in the super-white range (≈ 107% signal, below 109%)
    peak = C.bt2446c_curve(torch.tensor([1000.0], dtype=torch.float64)).item()
    assert 1.0 < (peak / 100) ** (1 / 2.4) < 1.09
    v = C.bt2446c_curve(torch.linspace(0, 10000, 5001, dtype=torch.float64))
    assert (v.diff() > 0).all()


def test_bt2446c_crosstalk_and_chromaticity():
    g = C.bt2446c_tone_map(grey(400.0), alpha=0.2)
    assert torch.allclose(g, torch.full_like(g, g[0, 0, 0].item()), atol=1e-9)  # grey stays grey
    x = torch.tensor([300.0, 80.0, 20.0], dtype=torch.float64).view(3, 1, 1)
    out0 = C.bt2446c_tone_map(x, alpha=0.0)
    # α = 0: xy chromaticity preserved (RGB scaled by Y_SDR / Y_HDR)
    assert torch.allclose(out0 / out0.sum(), x / x.sum(), atol=1e-12)
    out = C.bt2446c_tone_map(x, alpha=0.25)
    # same luminance mapping either way (the crosstalk matrix preserves Y of neutral axis only,
    # but the curve is applied to the crosstalked Y) — output is finite and non-negative here
    assert torch.isfinite(out).all() and (out >= -1e-9).all()


# ---------------------------------------------------------------- BT.2390 tone map, filmic


def test_bt2390_tone_map_peak_and_passthrough():
    x = ramp(0, 4000, 4001)
    out = C.bt2390_tone_map(x, source_peak=4000, target_peak=1000, mode="maxrgb")
    assert out.max().item() <= 1000.0 + 1e-6
    assert (out[0, 0].diff() >= -1e-9).all()
    # below the knee start KS the EETF is the identity
    ks_pq = (1.5 * (C.pq_encode(torch.tensor(1000.0, dtype=torch.float64)) - 0) / C.pq_encode(torch.tensor(4000.0, dtype=torch.float64)) - 0.5)
    ks_nits = C.pq_decode(ks_pq * C.pq_encode(torch.tensor(4000.0, dtype=torch.float64))).item()
    low = x[..., : int(ks_nits * 0.9)]
    assert torch.allclose(C.bt2390_tone_map(low, 4000, 1000), low, rtol=1e-9, atol=1e-9)
    # max(R,G,B) mode keeps channel ratios; rgb mode equals the EETF on each PQ component
    c = torch.tensor([3000.0, 1500.0, 300.0], dtype=torch.float64).view(3, 1, 1)
    m = C.bt2390_tone_map(c, 4000, 1000, mode="maxrgb")
    assert torch.allclose(m / m[0], c / c[0], atol=1e-12)
    r = C.bt2390_tone_map(c, 4000, 1000, mode="rgb")
    ref = C.pq_decode(C.bt2390_eetf(C.pq_encode(c), 0.0, 4000.0, 0.0, 1000.0))
    assert torch.allclose(r, ref, rtol=1e-9)
    # SDR down-conversion to a 100–203 cd/m² display never exceeds the display peak
    for peak in (100.0, 203.0):
        s = C.bt2390_tone_map(ramp(0, 1000), 1000, peak, mode="rgb")
        assert s.max().item() <= peak + 1e-9


def test_filmic_curve():
    x = ramp(0, 5000)
    out = C.filmic_tone_map(x, exposure=2.0)
    assert out[0, 0, 0].item() == pytest.approx(0.0, abs=1e-9)
    assert (out[0, 0].diff() >= 0).all() and out.max().item() <= 1.0
    white = 11.2 * 203.0 / 2.0
    assert C.filmic_tone_map(grey(white), exposure=2.0)[0, 0, 0].item() == pytest.approx(1.0, abs=1e-9)


def test_sdr_bt709_signal_gamut_clip_and_bt1886():
    w = C.sdr_bt709_signal(grey(1.0))
    assert torch.allclose(w, torch.ones_like(w), atol=1e-9)
    g = C.sdr_bt709_signal(grey(0.18))[0, 0, 0].item()
    assert g == pytest.approx(0.18 ** (1 / 2.4), abs=1e-9)
    # a pure BT.2020 green is outside BT.709: clipped into [0, 1]
    green = torch.tensor([0.0, 0.8, 0.0], dtype=torch.float64).view(3, 1, 1)
    s = C.sdr_bt709_signal(green)
    assert s.min().item() >= 0.0 and s.max().item() <= 1.0


def test_luminance_matches_rp177_row():
    y = C.luminance(torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1), "bt2020").item()
    assert y == pytest.approx(0.2627, abs=1e-4)
    y = C.luminance(torch.ones(2, 3, 4, 5), "bt709")
    assert y.shape == (2, 1, 4, 5) and torch.allclose(y, torch.ones_like(y), atol=1e-6)
