"""The frame path's fast colour maths against the exact functions and colour-science.

Lookup tables for the transfer functions, the chroma-resolution light meter and the reworked
planes ↔ R'G'B' conversions must agree with the float64 reference path: within 1 10-bit code
(the issue's bar), and in practice far closer.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

colour = pytest.importorskip("colour")

from hdrvideo import colour as C  # noqa: E402
from hdrvideo.media.decode import PlaneLayout  # noqa: E402
from hdrvideo.processors import BT2408Processor  # noqa: E402
from hdrvideo.stages import PeakRollOff, ProcessStage, build_chain  # noqa: E402

RNG = np.random.default_rng(11)


def scene_planes(n: int = 2, h: int = 48, w: int = 64, seed: int = 0) -> list[torch.Tensor]:
    """8-bit limited 4:2:0 planes with gradients, saturated colours, noise, black and white."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    y = 16 + 219 * (0.5 * xx + 0.5 * yy)
    y = (y + 12 * torch.randn(n, h, w, generator=g)).round().clamp(0, 255)
    y[:, :4] = 16
    y[:, -4:] = 235
    y[:, 8:12, :8] = 255  # super-white
    cb = (128 + 100 * torch.sin(6 * xx[::2, ::2] + yy[::2, ::2]) + 10 * torch.randn(n, h // 2, w // 2, generator=g))
    cr = (128 - 100 * torch.cos(5 * yy[::2, ::2]) + 10 * torch.randn(n, h // 2, w // 2, generator=g))
    return [y.to(torch.uint8), cb.round().clamp(0, 255).to(torch.uint8), cr.round().clamp(0, 255).to(torch.uint8)]


def reference_codes(planes: list[torch.Tensor], sdr_white: float = 203.0):
    """The float64 reference path: exact transfer functions, no lookup tables."""
    rgb = C.planes_to_rgb(*planes, "bt709", 8, False, "left", torch.float64).clamp(0, 1)
    return C.rgb_to_planes(C.bt2408_sdr_to_pq(rgb, sdr_white), "bt2020", 10, False, "left")


def video_info():
    """What the process stage reads of the probed stream: 8-bit limited BT.709, left-sited."""
    return SimpleNamespace(matrix="bt709", primaries="bt709", full_range=False, chroma_siting="left")


# ------------------------------------------------------------------ lookup tables


def test_bt1886_lut_matches_colour_science():
    v = np.concatenate([np.linspace(0, 1, 4097), RNG.uniform(0, 1, 5000), [1e-6, 1e-4, 0.999999]])
    got = C.bt1886_eotf_lut(203.0)(torch.tensor(v, dtype=torch.float32)).double().numpy()
    ref = colour.models.eotf_BT1886(v, L_B=0, L_W=203.0)
    assert np.abs(got - ref).max() <= 0.004  # half a 1/65,536 step times the slope at V = 1
    # out-of-range signals clamp instead of indexing outside the table
    edge = C.bt1886_eotf_lut(203.0)(torch.tensor([-0.5, 1.5]))
    assert edge[0] < 1e-6 and edge[1] == pytest.approx(203.0, abs=0.004)


def test_pq_inverse_lut_matches_colour_science_over_all_decades():
    nits = np.concatenate([[0.0, 1e-9, 1e-6, 0.005, 0.1, 1, 100, 203, 1000, 4000, 10000, 20000.0],
                           10 ** RNG.uniform(-9, 4, 20000), RNG.uniform(0, 10000, 2000)])
    got = C.pq_inverse_eotf_lut()(torch.tensor(nits, dtype=torch.float32)).double().numpy()
    ref = colour.models.eotf_inverse_ST2084(np.minimum(nits, 10000.0))
    assert np.abs(got - ref).max() < 2e-5  # < 0.02 of a 10-bit code
    assert np.allclose(got, C.pq_encode(torch.tensor(np.minimum(nits, 1e4))).numpy(), atol=2e-5)


def test_pq_upper_lut_is_never_below_the_eotf():
    e = np.concatenate([np.linspace(0, 1, 100_001), RNG.uniform(0, 1, 20000), [0.580688, 0.751827]])
    got = C.pq_eotf_upper_lut()(torch.tensor(e, dtype=torch.float64)).numpy()
    ref = colour.models.eotf_ST2084(e)
    # each step holds the EOTF at its upper end; only float32 rounding (~1e-7 relative) can undercut
    assert np.all(got >= ref * (1 - 1e-6))
    assert (got - ref).max() <= 2.5  # one step's rise, the most near 10,000 cd/m²
    assert (got - ref)[ref <= 1000].max() <= 0.2
    assert (got - ref)[ref <= 100].max() <= 0.02


def test_bt2408_lut_matches_colour_science():
    rgb = RNG.uniform(0, 1, (3, 64, 64))
    rgb[:, 0, :8] = 0.0
    rgb[:, 1, :8] = 1.0
    rgb[:, 2, :8] = RNG.uniform(0, 1e-3, (3, 8))  # near black, where PQ is steepest
    got = C.bt2408_sdr_to_pq_lut(torch.tensor(rgb, dtype=torch.float32)).double().numpy()
    lin = colour.models.eotf_BT1886(np.moveaxis(rgb, 0, -1), L_B=0, L_W=203.0)
    ref = np.moveaxis(colour.models.eotf_inverse_ST2084(colour.RGB_to_RGB(lin, "ITU-R BT.709", "ITU-R BT.2020")), -1, 0)
    assert np.abs(got - ref).max() < 2e-5
    assert got.dtype == np.float64 and C.bt2408_sdr_to_pq_lut(torch.zeros(1, 3, 2, 2)).dtype == torch.float32


# ------------------------------------------------------------------ planes ↔ R'G'B'


def _planes_to_rgb_reference(y, cb, cr, matrix, bits, full, siting):
    ycc = C.dequantize_ycbcr(y, cb, cr, bits, full, torch.float64)
    c = C.chroma_upsample(torch.stack(ycc[1:], dim=1), y.shape[-2], y.shape[-1], siting)
    return C.ycbcr_to_rgb(torch.cat([ycc[0][:, None], c], dim=1), matrix)


@pytest.mark.parametrize("siting", ["left", "center", "topleft"])
@pytest.mark.parametrize("bits", [8, 10])
def test_planes_to_rgb_equals_upsample_then_matrix(siting, bits):
    top = 2**bits - 1
    y = torch.randint(0, top + 1, (2, 12, 16))
    cb, cr = torch.randint(0, top + 1, (2, 2, 6, 8)).unbind(0)
    for matrix in ("bt709", "bt2020", "bt601"):
        ref = _planes_to_rgb_reference(y, cb, cr, matrix, bits, False, siting)
        got = C.planes_to_rgb(y, cb, cr, matrix, bits, False, siting, torch.float64)
        assert torch.allclose(got, ref, atol=1e-12)
        assert float((C.planes_to_rgb(y, cb, cr, matrix, bits, False, siting) - ref).abs().max()) < 1e-5
    grey = C.planes_to_rgb(y, None, None, "bt709", bits, False)
    assert torch.equal(grey[:, 0], grey[:, 2]) and grey.shape == (2, 3, 12, 16)


def test_chroma_upsample_fast_path_equals_interpolation_taps():
    c = torch.rand(1, 2, 5, 7, dtype=torch.float64)
    for siting in ("left", "center", "top", "bottom"):
        got = C.chroma_upsample(c, 10, 14, siting)
        ph, pv = C.CHROMA_SITING[siting]
        for axis, n_in, n_out, phase in ((-1, 7, 14, ph), (-2, 5, 10, pv)):
            i0, i1, w = C._linear_taps(n_out, n_in, 2, phase)
            # one axis at a time through the generic (index) path
            one = c.index_select(axis, torch.tensor(i0)) * (1 - torch.tensor(w, dtype=torch.float64).view(
                [-1, 1] if axis == -2 else [-1])) + c.index_select(axis, torch.tensor(i1)) * torch.tensor(
                w, dtype=torch.float64).view([-1, 1] if axis == -2 else [-1])
            fast = C._upsample_axis(c, c.dim() + axis, n_out, 2, phase)
            assert torch.allclose(fast, one, atol=1e-12), (siting, axis)
        assert got.shape == (1, 2, 10, 14)


def test_rgb_to_planes_equals_matrix_then_decimate():
    torch.manual_seed(1)
    rgb = torch.rand(2, 3, 16, 24, dtype=torch.float64)
    for matrix, bits in (("bt2020", 10), ("bt709", 8)):
        y, cb, cr = C.rgb_to_planes(rgb, matrix, bits, False, "left")
        ycc = C.rgb_to_ycbcr(rgb, matrix)
        ref = C.quantize_ycbcr(torch.cat([ycc[:, :1, ::2, ::2], C.chroma_downsample(ycc[:, 1:], "left")], 1), bits)
        ref_y = C.quantize_ycbcr(ycc, bits)[:, 0]
        assert torch.equal(y, ref_y)
        assert torch.equal(cb, ref[:, 1]) and torch.equal(cr, ref[:, 2])
    y16 = C.rgb_to_planes(rgb.float(), dtype=torch.int16)[0]
    assert y16.dtype == torch.int16 and int((y16.int() - C.rgb_to_planes(rgb)[0]).abs().max()) <= 1


# ------------------------------------------------------------------ the classical chain, end to end


def test_classical_chain_within_one_code_of_the_float64_reference():
    planes = scene_planes()
    n, h, w = planes[0].shape
    layout = PlaneLayout("yuv", "yuv420p", 8, (2, 2), w, h)
    proc = BT2408Processor()
    chain = build_chain(proc, (w, h), 1000.0)
    assert not any(isinstance(s, PeakRollOff) for s in chain)  # BT.2408 output never reaches the knee
    stage = ProcessStage(chain, layout, video_info(), torch.device("cpu"))
    packed = stage(planes, list(range(n)))
    ref = reference_codes(planes)
    differing = 0
    for got, want in zip((packed.y, packed.cb, packed.cr), ref):
        d = (torch.from_numpy(got.astype(np.int32)) - want).abs()
        assert int(d.max()) <= 1
        differing += int((d > 0).sum())
    assert differing / sum(r.numel() for r in ref) < 0.01  # rounding ties only
    # the flat-colour targets of the core issue: white 235 → 573, grey 126 → 429
    flat = [torch.full((1, h, w), 235, dtype=torch.uint8), torch.full((1, h // 2, w // 2), 128, dtype=torch.uint8),
            torch.full((1, h // 2, w // 2), 128, dtype=torch.uint8)]
    p = stage(flat, [0])
    assert (int(p.y.min()), int(p.y.max()), int(p.cb.min()), int(p.cr.max())) == (573, 573, 512, 512)


# ------------------------------------------------------------------ the light meter


def _exact_light_level(y, cb, cr):
    rgb = C.planes_to_rgb(y, cb, cr, "bt2020", 10, False, "left", torch.float64).clamp(0, 1)
    return C.content_light_level(rgb)


def test_light_level_of_planes_is_never_below_and_within_the_table_error():
    torch.manual_seed(3)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 24), torch.linspace(0, 1, 32), indexing="ij")
    cases = [
        # independent random codes at every sample (hue changes everywhere)
        [torch.randint(64, 941, (3, 24, 32), dtype=torch.int16),
         *torch.randint(64, 961, (2, 3, 12, 16), dtype=torch.int16).unbind(0)],
        # saturated hues turning across a gradient
        [(64 + 800 * (0.3 + 0.7 * xx * yy)).round().to(torch.int16)[None],
         (512 + 200 * torch.sin(3 * xx[::2, ::2])).round().to(torch.int16)[None],
         (512 + 200 * torch.cos(4 * yy[::2, ::2])).round().to(torch.int16)[None]],
    ] + [  # flat colours: white, black, a saturated one
        [torch.full((1, 4, 4), c[0], dtype=torch.int16)] + [torch.full((1, 2, 2), v, dtype=torch.int16) for v in c[1:]]
        for c in ((940, 512, 512), (64, 512, 512), (500, 300, 800))
    ]
    for planes in cases:
        (fmax, fmean), (emax, emean) = C.content_light_level_planes(*planes), _exact_light_level(*planes)
        # never below; above only by one table step's rise and a 2^-20 margin against float32 rounding
        assert bool((fmax.double() >= emax).all()) and bool((fmean.double() >= emean).all())
        step = torch.where(emax <= 1000, 0.2, 2.5)  # the step's rise: < 0.2 cd/m² up to 1,000
        assert bool((fmax.double() <= emax * (1 + 2e-5) + step).all())
        assert bool((fmean.double() <= emean * (1 + 2e-5) + step).all())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fast_path_is_device_agnostic():
    # the same tables, gathers and bit tricks on CUDA: the same codes and light levels as on the CPU
    planes = scene_planes()
    n, h, w = planes[0].shape
    layout = PlaneLayout("yuv", "yuv420p", 8, (2, 2), w, h)
    out = {}
    for dev in ("cpu", "cuda"):
        stage = ProcessStage(build_chain(BT2408Processor(device=dev), (w, h), 1000.0), layout, video_info(),
                             torch.device(dev), measure=True)
        out[dev] = stage(planes, list(range(n)))
    for k in ("y", "cb", "cr"):
        assert np.abs(getattr(out["cpu"], k).astype(int) - getattr(out["cuda"], k).astype(int)).max() <= 1
    assert np.allclose(out["cpu"].frame_max, out["cuda"].frame_max, rtol=1e-5)
    assert np.allclose(out["cpu"].frame_mean, out["cuda"].frame_mean, rtol=1e-5)


@pytest.mark.parametrize("shape", [(3, 7, 5), (2, 3, 37, 29), (1, 2, 3, 5, 11)])
def test_strips_give_the_whole_frame_result(shape):
    # a strip of 16 pixels: several strips per frame, a short last one, every frame of a batch
    x = torch.rand(shape)
    fn = lambda v: C.apply_matrix(v.sqrt(), torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.8, 0.1], [0.0, 0.2, 0.8]]))  # noqa: E731
    got = C.per_pixel_in_strips(fn, x, pixels=16)
    assert got.shape == x.shape and torch.equal(got, fn(x))
    assert torch.equal(C.bt2408_sdr_to_pq_lut(x), C.per_pixel_in_strips(C.bt2408_sdr_to_pq_lut, x, pixels=1 << 30))


def t64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _rebuilt_luminance(y, cb, cr) -> torch.Tensor:
    rec = C.planes_to_rgb(y, cb, cr, "bt2020", 10, False, "left", dtype=torch.float64).clamp(0, 1)
    return (C.pq_decode(rec) * C.rgb_to_xyz_matrix("bt2020")[1].view(1, 3, 1, 1)).sum(1)


def test_luma_adjustment_gives_each_pixel_its_luminance_back_after_420():
    # saturated blue and yellow bars with edges inside the chroma pairs: plain 4:2:0 moves the
    # edge pixels' luminance by tens of per cent (H.Sup15 §6.3.2); luma adjustment puts it back
    nits = torch.zeros(1, 3, 8, 18, dtype=torch.float64)
    bars = (torch.arange(18) // 3) % 2 == 1
    nits[...] = t64([2.0, 2.0, 180.0]).view(1, 3, 1, 1)
    nits[..., bars] = t64([190.0, 180.0, 3.0]).view(1, 3, 1, 1)
    pq = C.pq_encode(nits).float()
    target = (nits * C.rgb_to_xyz_matrix("bt2020")[1].view(1, 3, 1, 1)).sum(1)
    y, cb, cr = C.rgb_to_planes(pq, "bt2020", 10, False, "left", dtype=torch.int16)
    before = ((_rebuilt_luminance(y, cb, cr) - target).abs() / target).max()
    adjusted = C.luma_adjust(y, cb, cr, pq)
    after = ((_rebuilt_luminance(adjusted, cb, cr) - target).abs() / target).max()
    assert before > 0.2 and after < 0.02, (float(before), float(after))  # within 10-bit rounding
    assert adjusted.dtype == y.dtype and not torch.equal(adjusted, y)
    # exhaustive check of the bisection on one pixel: no other code lands nearer the target
    i = int(((_rebuilt_luminance(y, cb, cr) - target).abs() / target).view(-1).argmax())
    row, col = divmod(i, 18)
    errs = []
    for code in range(64, 941):
        trial = adjusted.clone()
        trial[0, row, col] = code
        errs.append(abs(float(_rebuilt_luminance(trial, cb, cr)[0, row, col] - target[0, row, col])))
    assert int(adjusted[0, row, col]) - 64 in [int(np.argmin(errs)) + k for k in (-1, 0, 1)]
    # flat colour: nothing to re-solve, the plain rounding stays (FFmpeg-equal codes)
    flat = C.pq_encode(torch.full((1, 3, 8, 16), 100.0, dtype=torch.float64)).float()
    fy, fcb, fcr = C.rgb_to_planes(flat, "bt2020", 10, False, "left", dtype=torch.int16)
    assert torch.equal(C.luma_adjust(fy, fcb, fcr, flat), fy)


def test_process_stage_packs_with_luma_adjustment_by_preset():
    from hdrvideo.presets import load_preset

    assert not load_preset("bt2408").encode.luma_adjust  # the reference, FFmpeg-equal packing
    assert load_preset("sr4-itm").encode.luma_adjust and load_preset("hdr-expand").encode.luma_adjust
    h, w = 16, 24
    y = torch.full((1, h, w), 120, dtype=torch.uint8)
    cb = torch.full((1, h // 2, w // 2), 128, dtype=torch.uint8)
    cr = torch.full((1, h // 2, w // 2), 128, dtype=torch.uint8)
    y[..., 5::6] = 60  # saturated red columns on grey: edges inside the chroma pairs
    cr[..., 2::3] = 240
    info = SimpleNamespace(matrix="bt709", full_range=False, chroma_siting="left", primaries="bt709")
    lay = PlaneLayout("yuv", "yuv420p", 8, (2, 2), w, h)
    chain = build_chain(BT2408Processor(), (w, h), 1000.0)
    plain = ProcessStage(chain, lay, info, torch.device("cpu"), measure=False)([y, cb, cr], [0])
    adjusted = ProcessStage(chain, lay, info, torch.device("cpu"), measure=False, luma_adjust=True)([y, cb, cr], [0])
    assert np.array_equal(plain.cb, adjusted.cb) and np.array_equal(plain.cr, adjusted.cr)  # chroma untouched
    assert not np.array_equal(plain.y, adjusted.y)
