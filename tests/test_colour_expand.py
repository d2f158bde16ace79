"""SDR→HDR highlight expansion of hdrvideo.colour: the inverse of BT.2446 Method C, generalised.

colour-science has no BT.2446 (forward or inverse), so the reference here is the Report's own
curve: the forward Method C curve of ``bt2446c_curve`` (tested against the Report's equations and
printed constants in test_colour_tonemap.py) and plain-float recomputations of its inverse.
"""

import math

import pytest
import torch

from hdrvideo import colour as C

K1, K2, K3, K4, YIP = C.BT2446C_K1, C.BT2446C_K2, C.BT2446C_K3, C.BT2446C_K4, C.BT2446C_Y_SDR_IP


def t64(values):
    return torch.tensor(values, dtype=torch.float64)


def test_bt2446c_inverse_is_the_inverse_of_the_reports_curve():
    y_sdr = torch.linspace(0.0, 118.0, 2361, dtype=torch.float64)
    err = (C.bt2446c_curve(C.bt2446c_inverse_curve(y_sdr)) - y_sdr).abs()
    away = (y_sdr - YIP).abs() > 0.1  # the printed constants join the segments to 0.04 cd/m²
    assert float(err[away].max()) < 1e-9 and float(err.max()) < 0.05
    y_hdr = torch.linspace(0.0, 1000.0, 2001, dtype=torch.float64)
    back = C.bt2446c_inverse_curve(C.bt2446c_curve(y_hdr))
    # the printed constants leave a 0.02 % gap at the inflection point; elsewhere exact
    assert torch.allclose(back, y_hdr, rtol=3e-4, atol=1e-9)


def test_bt2446c_inverse_values_recomputed_from_the_report():
    y_ip = YIP / K1  # 69.8 cd/m², §6.1.4
    assert y_ip == pytest.approx(69.8072, abs=1e-3)
    for y_sdr in (10.0, 58.0, 80.0, 100.0, 110.0):
        ref = y_sdr / K1 if y_sdr < YIP else y_ip * (math.exp((y_sdr - K4) / K2) + K3)
        assert float(C.bt2446c_inverse_curve(t64(y_sdr))) == pytest.approx(ref, rel=1e-12)
    # 100 % SDR ↔ ≈ 332 cd/m²; 1000 cd/m² ↔ ≈ 118 SDR cd/m² (the Report's super-white)
    assert float(C.bt2446c_inverse_curve(t64(100.0))) == pytest.approx(332.38, abs=0.01)
    assert float(C.bt2446c_inverse_curve(C.bt2446c_curve(t64(1000.0)))) == pytest.approx(1000.0, rel=1e-9)


def test_expansion_curve_with_the_reports_constants_is_method_c_inverse():
    w = 100.0 / K1
    knee = (YIP / 100.0) ** (1 / 2.4)
    peak = float(C.bt2446c_inverse_curve(t64(100.0)))
    s_k, beta = C.sdr_expansion_parameters(w, peak, knee)
    assert s_k == pytest.approx(YIP / 100.0, rel=1e-12)
    assert beta == pytest.approx(K2 / 100.0, rel=2e-3)  # the Report prints k2 to 7 digits
    s = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)
    ours = C.sdr_expansion_curve(s, w, peak, knee)
    report = C.bt2446c_inverse_curve(100.0 * s)
    assert torch.allclose(ours, report, rtol=2e-3, atol=1e-9)


@pytest.mark.parametrize("white,peak,knee", [(203.0, 1000.0, 0.8), (203.0, 600.0, 0.75), (100.0, 4000.0, 0.6),
                                             (300.0, 1000.0, 0.9)])
def test_expansion_curve_shape(white, peak, knee):
    s = torch.linspace(0.0, 1.0, 20001, dtype=torch.float64)
    f = C.sdr_expansion_curve(s, white, peak, knee)
    s_k = knee**2.4
    below = s <= s_k
    assert torch.allclose(f[below], white * s[below])  # the BT.2408 line below the knee
    assert float(f[-1]) == pytest.approx(peak, rel=1e-9)  # SDR white lands on the peak
    d = f.diff()
    assert (d > 0).all()  # monotonic
    slope = d / s.diff()
    i = int(torch.searchsorted(s, torch.tensor(s_k, dtype=torch.float64)))
    assert float(slope[i + 1]) == pytest.approx(white, rel=2e-3)  # C¹ at the knee
    ratio = f[1:] / s[1:]
    assert (ratio.diff() >= -1e-9).all()  # convex through 0: f(s)/s never falls
    # no expansion when the peak is not above SDR white
    assert torch.allclose(C.sdr_expansion_curve(s, 300.0, 250.0, knee), 300.0 * s)
    with pytest.raises(ValueError):
        C.sdr_expansion_parameters(white, peak, 1.0)


def signal_to_nits(rgb_signal, **kw):
    rgb = t64(rgb_signal).view(1, 3, 1, 1)
    return C.pq_decode(C.hdr_expand_sdr_to_pq(rgb, **kw))[0, :, 0, 0]


def test_hdr_expand_levels_at_the_defaults():
    white = signal_to_nits([1.0, 1.0, 1.0])
    assert torch.allclose(white, t64([1000.0] * 3), rtol=1e-6)
    grey18 = float(C.bt709_oetf(t64(0.18)))  # an 18 % grey card through the BT.709 OETF: 0.409
    g = signal_to_nits([grey18] * 3)
    assert 10.0 <= float(g[0]) <= 40.0
    # below the knee the expansion is the BT.2408 mapping
    for v in (0.05, 0.3, 0.6, 0.79):
        rgb = t64([v, v * 0.8, v * 0.6]).view(1, 3, 1, 1)
        assert torch.allclose(C.hdr_expand_sdr_to_pq(rgb), C.bt2408_sdr_to_pq(rgb), atol=1e-12)


def hue_deg(nits2020):
    ictcp = C.bt2020_to_ictcp(nits2020.view(1, 3, 1, 1))[0, :, 0, 0]
    return math.degrees(math.atan2(float(ictcp[2]), float(ictcp[1])))


@pytest.mark.parametrize("saturation", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("signal", [(1.0, 0.0, 0.0), (1.0, 0.55, 0.5), (1.0, 0.9, 0.85), (0.95, 0.95, 0.2),
                                    (0.3, 0.5, 1.0), (0.2, 1.0, 0.3), (1.0, 0.75, 0.6)])
def test_hdr_expand_keeps_hue_in_ictcp(signal, saturation):
    """A saturated or bright SDR colour keeps its ICtCp hue within 3° of its BT.2408 rendering."""
    rgb = t64(signal).view(1, 3, 1, 1)
    ref = C.pq_decode(C.bt2408_sdr_to_pq(rgb))[0, :, 0, 0]
    out = signal_to_nits(signal, saturation=saturation)
    d = (hue_deg(out) - hue_deg(ref) + 180.0) % 360.0 - 180.0
    assert abs(d) <= 3.0, (signal, d)


def test_hdr_expand_never_exceeds_the_peak_and_saturation_adds_chroma():
    g = torch.Generator().manual_seed(1)
    rgb = torch.rand(1, 3, 64, 64, generator=g, dtype=torch.float64) ** 0.3  # mostly bright
    for sat in (0.0, 1.0, 4.0):
        nits = C.pq_decode(C.hdr_expand_sdr_to_pq(rgb, peak=1000.0, saturation=sat))
        assert float(nits.amax()) <= 1000.0 + 1e-6
        assert float(nits.amin()) >= 0.0
    bright = t64([1.0, 0.8, 0.7]).view(1, 3, 1, 1)
    chroma = []
    for sat in (0.0, 1.0):
        ict = C.bt2020_to_ictcp(C.pq_decode(C.hdr_expand_sdr_to_pq(bright, saturation=sat)))
        chroma.append(float(torch.hypot(ict[0, 1], ict[0, 2]).squeeze()))
    assert chroma[1] > 1.1 * chroma[0]


def test_peak_limit_holds_after_the_420_round_trip():
    # blue next to white at 900 cd/m²: 4:2:0 decimation and interpolation lift some rebuilt
    # pixels far above the 4:4:4 maximum unless Y' is lowered there
    nits = torch.zeros(1, 3, 8, 18, dtype=torch.float64)
    white = (torch.arange(18) // 3) % 2 == 1  # 3-pixel bars: edges inside the chroma pairs
    nits[...] = t64([0.0, 0.0, 900.0]).view(1, 3, 1, 1)
    nits[..., white] = 900.0
    pq = C.pq_encode(nits)

    def rebuilt_max(x):
        y, cb, cr = C.rgb_to_planes(x, "bt2020", 10, False, "left")
        rec = C.planes_to_rgb(y, cb, cr, "bt2020", 10, False, "left", dtype=torch.float64).clamp(0, 1)
        return float(C.pq_decode(rec).amax())

    assert rebuilt_max(pq) > 4000.0
    limited = C.limit_peak_after_420(pq, 950.0, "left")
    assert rebuilt_max(limited) <= 950.0 * 1.02  # within the 10-bit rounding
    d = (limited - pq)
    assert torch.allclose(d[:, 0], d[:, 1]) and torch.allclose(d[:, 1], d[:, 2])  # luma only
    assert float(d.max()) <= 0.0
    flat = C.pq_encode(torch.full((1, 3, 8, 16), 500.0, dtype=torch.float64))
    assert C.limit_peak_after_420(flat, 950.0) is flat  # nothing to do: returned as it is
