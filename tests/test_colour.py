"""The colour module against colour-science (the oracle) and the standards' published values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

colour = pytest.importorskip("colour")

from hdrvideo import colour as C  # noqa: E402

RNG = np.random.default_rng(7)


def t64(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def chw(a: np.ndarray) -> torch.Tensor:
    """(H,W,3) numpy → (3,H,W) float64 tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 0)))


def hwc(t: torch.Tensor) -> np.ndarray:
    return np.moveaxis(t.numpy(), 0, -1)


def test_pq_matches_colour_science_both_ways():
    nits = np.concatenate([[0.0, 0.005, 0.1, 1, 100, 203, 1000, 4000, 10000], RNG.uniform(0, 10000, 200)])
    assert np.allclose(C.pq_encode(t64(nits)).numpy(), colour.models.eotf_inverse_ST2084(nits), atol=1e-10)
    e = np.linspace(0, 1, 257)
    assert np.allclose(C.pq_decode(t64(e)).numpy(), colour.models.eotf_ST2084(e), rtol=1e-9, atol=1e-9)
    # float32 path stays within the 1e-5 budget of the issue
    assert np.abs(C.pq_encode(torch.tensor(nits, dtype=torch.float32)).numpy()
                  - colour.models.eotf_inverse_ST2084(nits)).max() <= 1e-5


def test_pq_published_values():
    # ST 2084: 100 cd/m² ≈ 0.5081, 1000 cd/m² ≈ 0.7518, 10000 → 1.0; BT.2408 reference white 203 → 0.58
    assert float(C.pq_encode(t64(100.0))) == pytest.approx(0.508078, abs=1e-6)
    assert float(C.pq_encode(t64(1000.0))) == pytest.approx(0.751827, abs=1e-6)
    assert float(C.pq_encode(t64(10000.0))) == pytest.approx(1.0, abs=1e-12)
    assert float(C.pq_encode(t64(203.0))) == pytest.approx(0.580688, abs=1e-5)


@pytest.mark.parametrize("l_b", [0.0, 0.1])
def test_bt1886_matches_colour_science(l_b):
    v = np.linspace(0, 1, 101)
    ref = colour.models.eotf_BT1886(v, L_B=l_b, L_W=203.0)
    assert np.allclose(C.bt1886_eotf(t64(v), l_w=203.0, l_b=l_b).numpy(), ref, atol=1e-9)
    inv = colour.models.eotf_inverse_BT1886(ref, L_B=l_b, L_W=203.0)
    assert np.allclose(C.bt1886_inverse_eotf(t64(ref), l_w=203.0, l_b=l_b).numpy(), inv, atol=1e-9)


def test_bt709_oetf_matches_colour_science():
    e = np.linspace(0, 1, 201)
    assert np.allclose(C.bt709_oetf(t64(e)).numpy(), colour.models.oetf_BT709(e), atol=1e-12)
    v = colour.models.oetf_BT709(e)
    assert np.allclose(C.bt709_inverse_oetf(t64(v)).numpy(), e, atol=1e-9)


def test_bt2087_matrix_matches_colour_science_and_published_values():
    ref = colour.matrix_RGB_to_RGB(colour.RGB_COLOURSPACES["ITU-R BT.709"], colour.RGB_COLOURSPACES["ITU-R BT.2020"])
    m = C.rgb_to_rgb_matrix("bt709", "bt2020").numpy()
    assert np.allclose(m, ref, atol=1e-7)
    # ITU-R BT.2087-0 §2 publishes the matrix to four decimals
    published = [[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]]
    assert np.allclose(m, published, atol=6e-5)
    rgb = RNG.uniform(0, 1, (4, 5, 3))
    out = hwc(C.bt709_to_bt2020(chw(rgb)))
    assert np.allclose(out, colour.RGB_to_RGB(rgb, "ITU-R BT.709", "ITU-R BT.2020"), atol=1e-7)


@pytest.mark.parametrize("name,weights", [("bt601", "ITU-R BT.601"), ("bt709", "ITU-R BT.709"), ("bt2020", "ITU-R BT.2020")])
def test_ycbcr_matches_colour_science(name, weights):
    rgb = RNG.uniform(0, 1, (6, 7, 3))
    k = colour.WEIGHTS_YCBCR[weights]
    ref = colour.RGB_to_YCbCr(rgb, K=k, in_bits=10, in_legal=False, in_int=False, out_legal=False, out_int=False)
    ycc = C.rgb_to_ycbcr(chw(rgb), name)
    assert np.allclose(hwc(ycc), ref, atol=1e-9)
    assert np.allclose(hwc(C.ycbcr_to_rgb(ycc, name)), rgb, atol=1e-9)
    # integer quantisation: 10-bit limited range as colour-science does it
    ref_int = colour.RGB_to_YCbCr(rgb, K=k, out_bits=10, out_legal=True, out_int=True)
    assert np.array_equal(hwc(C.quantize_ycbcr(ycc, 10, False)), ref_int)


def test_quantisation_code_points():
    # BT.709-6 item 4.6 / BT.2100 Table 9: black 64, white 940, chroma zero 512 at 10 bits
    ycc = torch.tensor([[0.0, 1.0], [0.0, 0.5], [0.0, -0.5]], dtype=torch.float64).view(3, 1, 2)
    codes = C.quantize_ycbcr(ycc, 10, False)
    assert codes[:, 0, 0].tolist() == [64, 512, 512]
    assert codes[:, 0, 1].tolist() == [940, 960, 64]
    full = C.quantize_ycbcr(ycc, 8, True)
    assert full[:, 0, 1].tolist() == [255, 255, 0]
    y, cb, cr = C.dequantize_ycbcr(torch.tensor(940), torch.tensor(960), torch.tensor(64), 10, False, torch.float64)
    assert (float(y), float(cb), float(cr)) == (1.0, 0.5, -0.5)


def test_ictcp_and_delta_e_itp_match_colour_science():
    rgb_nits = RNG.uniform(0, 1000, (5, 6, 3))
    ictcp = hwc(C.bt2020_to_ictcp(chw(rgb_nits)))
    ref = colour.RGB_to_ICtCp(rgb_nits, method="ITU-R BT.2100-2 PQ")  # input in cd/m²
    assert np.allclose(ictcp, ref, atol=1e-7)
    other = RNG.uniform(0, 1000, (5, 6, 3))
    ict2 = hwc(C.bt2020_to_ictcp(chw(other)))
    de = C.delta_e_itp(chw(ictcp), chw(ict2)).numpy()
    assert np.allclose(de, colour.difference.delta_E_ITP(ictcp, ict2), atol=1e-6)


def test_bt2408_mapping_reference_points():
    # BT.2408: 100 % SDR → HDR reference white 203 cd/m² (PQ ≈ 0.58); black stays 0
    white = C.bt2408_sdr_to_pq(torch.ones(3, 1, 1, dtype=torch.float64))
    assert torch.allclose(white, torch.full_like(white, float(C.pq_encode(torch.tensor(203.0, dtype=torch.float64)))))
    black = C.bt2408_sdr_to_pq(torch.zeros(3, 1, 1, dtype=torch.float64))
    assert float(black.max()) < 1e-6
    # an arbitrary colour: the chain computed by colour-science
    rgb = RNG.uniform(0, 1, (3, 4, 3))
    lin = colour.models.eotf_BT1886(rgb, L_B=0, L_W=203.0)
    ref = colour.models.eotf_inverse_ST2084(colour.RGB_to_RGB(lin, "ITU-R BT.709", "ITU-R BT.2020"))
    assert np.allclose(hwc(C.bt2408_sdr_to_pq(chw(rgb))), ref, atol=1e-9)
    out32 = C.bt2408_sdr_to_pq(chw(rgb).float())
    assert np.abs(hwc(out32.double()) - ref).max() <= 1e-5


def test_bt2390_eetf_properties():
    e = torch.linspace(0, 1, 1001, dtype=torch.float64)
    out = C.bt2390_eetf(e, 0.0, 4000.0, 0.0, 1000.0)
    src_peak = float(C.pq_encode(torch.tensor(4000.0, dtype=torch.float64)))
    tgt_peak = float(C.pq_encode(torch.tensor(1000.0, dtype=torch.float64)))
    ks = 1.5 * tgt_peak / src_peak - 0.5
    below = e < ks * src_peak
    # identity below the knee, except the black lift b·(1-E)^4 with b = PQ(0) ≈ 7.3e-7
    assert torch.allclose(out[below], e[below], atol=1e-6)
    assert float(out.max()) == pytest.approx(tgt_peak, abs=1e-9)  # source peak → target peak
    assert bool((out[1:] - out[:-1] >= -1e-12).all())  # monotonic


def test_chroma_upsample_siting():
    c = torch.tensor([[[[0.0, 4.0, 8.0]]]], dtype=torch.float64)  # (1,1,1,3)
    left = C.chroma_upsample(c, 1, 6, "left")[0, 0, 0].tolist()
    assert left == [0.0, 2.0, 4.0, 6.0, 8.0, 8.0]  # co-sited: even samples exact
    centre = C.chroma_upsample(c, 1, 6, "center")[0, 0, 0].tolist()
    assert centre == pytest.approx([0.0, 1.0, 3.0, 5.0, 7.0, 8.0])  # centred between luma pairs


def test_chroma_downsample_preserves_flat_and_linear():
    flat = torch.full((1, 2, 8, 10), 0.25, dtype=torch.float64)
    assert torch.allclose(C.chroma_downsample(flat, "left"), torch.full((1, 2, 4, 5), 0.25, dtype=torch.float64))
    ramp = torch.arange(10, dtype=torch.float64).view(1, 1, 1, 10).expand(1, 1, 8, 10)
    down = C.chroma_downsample(ramp, "left")[0, 0, 0]
    assert down[1:-1].tolist() == pytest.approx([2.0, 4.0, 6.0])  # co-sited at even luma columns


@pytest.mark.parametrize("siting", ["left", "center", "topleft", "bottom"])
def test_chroma_down_then_up_is_exact_on_linear_ramps(siting):
    # the decimation filters and the interpolation share the siting phase: a linear chroma
    # ramp survives 4:4:4 → 4:2:0 → 4:4:4 exactly away from the borders
    yy, xx = torch.meshgrid(torch.arange(24.0, dtype=torch.float64), torch.arange(32.0, dtype=torch.float64), indexing="ij")
    ramp = (0.01 * xx + 0.015 * yy).view(1, 1, 24, 32)
    back = C.chroma_upsample(C.chroma_downsample(ramp, siting), 24, 32, siting)
    assert float((back - ramp)[..., 4:-4, 4:-4].abs().max()) < 1e-12


def test_planes_round_trip_4_2_0():
    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 3, 4, dtype=torch.float64), size=(48, 64),
                                             mode="bilinear", align_corners=True)
    y, cb, cr = C.rgb_to_planes(smooth, "bt2020", 10, False, "left")
    assert y.shape == (2, 48, 64) and cb.shape == (2, 24, 32)
    assert y.dtype == torch.int32 and int(y.min()) >= 64 and int(y.max()) <= 940
    back = C.planes_to_rgb(y, cb, cr, "bt2020", 10, False, "left", torch.float64)
    # 10-bit quantisation (½ code ≈ 6e-4) plus chroma subsampling of saturated random colours
    assert float((back - smooth).abs().max()) < 0.08
    assert float((back - smooth).abs().mean()) < 0.005


def test_content_light_level_cta861():
    # two frames: flat 100 cd/m² and half 1000 / half 0 (BT.2020 PQ R'G'B')
    pq = C.pq_encode(torch.tensor([100.0, 1000.0, 0.0], dtype=torch.float64))
    a = torch.full((3, 4, 4), float(pq[0]), dtype=torch.float64)
    b = torch.full((3, 4, 4), float(pq[2]), dtype=torch.float64)
    b[0, :, :2] = pq[1]  # red channel only: maxRGB counts it
    fmax, fmean = C.content_light_level(torch.stack([a, b]))
    assert fmax.tolist() == pytest.approx([100.0, 1000.0], rel=1e-9)
    assert fmean.tolist() == pytest.approx([100.0, 500.0], rel=1e-9)
