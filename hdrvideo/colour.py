"""All colour maths of hdrvideo, in torch, device- and dtype-agnostic.

Functional API in the style of colour-science: every function takes and returns
tensors whose channel axis is ``-3`` (so ``(3,H,W)`` and ``(N,3,H,W)`` both work)
unless stated otherwise, never changes device, and keeps the input's float dtype.

Conventions
-----------
* R'G'B' and Y' are normalised to [0, 1]; Cb/Cr to [-0.5, 0.5].
* Linear light is absolute luminance in cd/m² (nits) unless a function says otherwise.
* "PQ" is the SMPTE ST 2084 / ITU-R BT.2100 perceptual quantiser.

Sources: ITU-R BT.601-7, BT.709-6, BT.1886, BT.2020-2, BT.2087-0, BT.2100-2,
BT.2124-0, BT.2390-10, BT.2408-7, SMPTE ST 2084:2014, SMPTE RP 177, CTA-861.3-A.
Tests compare against colour-science.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
from torch import Tensor

from .standards import CHROMA_SITING, D65, KR_KB, PRIMARIES, Chromaticities

__all__ = [
    "PRIMARIES",
    "KR_KB",
    "Chromaticities",
    "rgb_to_xyz_matrix",
    "rgb_to_rgb_matrix",
    "apply_matrix",
    "bt709_to_bt2020",
    "bt2020_to_bt709",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
    "quantize_ycbcr",
    "dequantize_ycbcr",
    "bt1886_eotf",
    "bt1886_inverse_eotf",
    "bt709_oetf",
    "bt709_inverse_oetf",
    "pq_decode",
    "pq_encode",
    "PQ_MAX_NITS",
    "SDR_REFERENCE_WHITE_NITS",
    "bt2408_sdr_to_pq",
    "bt2020_to_ictcp",
    "delta_e_itp",
    "bt2390_eetf",
    "pu21_encode",
    "pq_roll_off",
    "pq_roll_off_knee_nits",
    "chroma_upsample",
    "planes_to_rgb",
    "rgb_to_planes",
    "convert_primaries_display",
    "chroma_downsample",
    "CHROMA_SITING",
    "content_light_level",
    "content_light_level_planes",
    "TransferLut",
    "bt1886_eotf_lut",
    "pq_inverse_eotf_lut",
    "pq_eotf_upper_lut",
    "bt2408_sdr_to_pq_lut",
]

PQ_MAX_NITS = 10000.0
#: HDR reference white of ITU-R BT.2408 §2.2 (also "graphics white").
SDR_REFERENCE_WHITE_NITS = 203.0


# --------------------------------------------------------------------------------------
# Primaries, white points and RGB↔XYZ (SMPTE RP 177)
# --------------------------------------------------------------------------------------


# Chromaticities, D65, PRIMARIES and KR_KB are plain data in hdrvideo.standards (re-exported).


def _xyz_column(x: float, y: float) -> list[float]:
    return [x / y, 1.0, (1.0 - x - y) / y]


@lru_cache(maxsize=None)
def _rgb_to_xyz_f64(primaries: str) -> tuple[tuple[float, ...], ...]:
    """Normalised primary matrix (SMPTE RP 177 §3.3) in float64, as nested tuples."""
    p = PRIMARIES[primaries]
    m = torch.tensor(
        [_xyz_column(*p.red), _xyz_column(*p.green), _xyz_column(*p.blue)], dtype=torch.float64
    ).T
    w = torch.tensor(_xyz_column(*p.white), dtype=torch.float64)
    s = torch.linalg.solve(m, w)
    return tuple(map(tuple, (m * s).tolist()))


def rgb_to_xyz_matrix(primaries: str, dtype: torch.dtype = torch.float64) -> Tensor:
    """3×3 matrix from linear RGB of ``primaries`` to CIE XYZ (Y=1 for white), SMPTE RP 177."""
    return torch.tensor(_rgb_to_xyz_f64(primaries), dtype=dtype)


def rgb_to_rgb_matrix(src: str, dst: str, dtype: torch.dtype = torch.float64) -> Tensor:
    """Linear RGB ``src`` → linear RGB ``dst`` via XYZ (same white point, no adaptation).

    ``rgb_to_rgb_matrix("bt709", "bt2020")`` is the ITU-R BT.2087-0 §2 matrix
    (≈ [[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]]).
    """
    return torch.tensor(_rgb_to_rgb_f64(src, dst), dtype=dtype)


@lru_cache(maxsize=None)
def _rgb_to_rgb_f64(src: str, dst: str) -> tuple[tuple[float, ...], ...]:
    m = torch.linalg.solve(rgb_to_xyz_matrix(dst), rgb_to_xyz_matrix(src))
    return tuple(map(tuple, m.tolist()))


@lru_cache(maxsize=64)
def _matrix_on(values: tuple[tuple[float, ...], ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """A constant 3×3 matrix as a tensor on ``device`` (made once: the frame path reuses it)."""
    return torch.tensor(values, dtype=dtype, device=device)


def apply_matrix(x: Tensor, matrix: Tensor) -> Tensor:
    """Apply a 3×3 matrix to the channel axis (-3) of ``x`` (one matrix product, not an einsum)."""
    m = matrix if (matrix.device, matrix.dtype) == (x.device, x.dtype) else matrix.to(device=x.device, dtype=x.dtype)
    h, w = x.shape[-2:]
    return torch.matmul(m, x.reshape(*x.shape[:-2], h * w)).view(x.shape)


def bt709_to_bt2020(rgb_linear: Tensor) -> Tensor:
    """Linear BT.709 RGB → linear BT.2020 RGB (ITU-R BT.2087-0, D65 to D65)."""
    return apply_matrix(rgb_linear, _matrix_on(_rgb_to_rgb_f64("bt709", "bt2020"), rgb_linear.device, rgb_linear.dtype))


def bt2020_to_bt709(rgb_linear: Tensor) -> Tensor:
    """Linear BT.2020 RGB → linear BT.709 RGB (inverse of BT.2087; may leave [0,1])."""
    return apply_matrix(rgb_linear, rgb_to_rgb_matrix("bt2020", "bt709"))


# --------------------------------------------------------------------------------------
# R'G'B' ↔ Y'CbCr (non-constant luminance) and integer quantisation
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _ycbcr_matrix_f64(matrix: str) -> tuple[tuple[float, ...], ...]:
    kr, kb = KR_KB[matrix]
    kg = 1.0 - kr - kb
    return (
        (kr, kg, kb),
        (-kr / (2 * (1 - kb)), -kg / (2 * (1 - kb)), 0.5),
        (0.5, -kg / (2 * (1 - kr)), -kb / (2 * (1 - kr))),
    )


def ycbcr_matrix(matrix: str, dtype: torch.dtype = torch.float64) -> Tensor:
    """R'G'B' → Y'CbCr matrix from K_R, K_B (BT.601 §2.5.2, BT.709 item 3.2-3.3, BT.2020 Table 4)."""
    return torch.tensor(_ycbcr_matrix_f64(matrix), dtype=dtype)


def rgb_to_ycbcr(rgb: Tensor, matrix: str = "bt709") -> Tensor:
    """Full-range float R'G'B' → Y'CbCr (Y' in [0,1], Cb/Cr in [-0.5,0.5])."""
    return apply_matrix(rgb, ycbcr_matrix(matrix))


def ycbcr_to_rgb(ycbcr: Tensor, matrix: str = "bt709") -> Tensor:
    """Full-range float Y'CbCr → R'G'B' (inverse of :func:`rgb_to_ycbcr`, unclipped)."""
    return apply_matrix(ycbcr, torch.linalg.inv(ycbcr_matrix(matrix)))


def _quant_params(bit_depth: int, full_range: bool) -> tuple[float, float, float, float]:
    """(luma scale, luma offset, chroma scale, chroma offset) for an n-bit code.

    Limited ("narrow") range: BT.709-6 item 4.6 / BT.2100-2 Table 9:
    D_Y = (219·Y' + 16)·2^(n-8), D_C = (224·C + 128)·2^(n-8).
    Full range: BT.2100-2 Table 9: D_Y = (2^n - 1)·Y', D_C = (2^n - 1)·C + 2^(n-1).
    """
    if full_range:
        top = float(2**bit_depth - 1)
        return top, 0.0, top, float(2 ** (bit_depth - 1))
    k = float(2 ** (bit_depth - 8))
    return 219.0 * k, 16.0 * k, 224.0 * k, 128.0 * k


def dequantize_ycbcr(
    y: Tensor, cb: Tensor, cr: Tensor, bit_depth: int, full_range: bool, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor, Tensor]:
    """Integer code values → float Y' (≈[0,1]) and Cb, Cr (≈[-0.5,0.5]); unclipped."""
    ys, yo, cs, co = _quant_params(bit_depth, full_range)
    return (
        (y.to(dtype) - yo) / ys,
        (cb.to(dtype) - co) / cs,
        (cr.to(dtype) - co) / cs,
    )


def quantize_ycbcr(ycbcr: Tensor, bit_depth: int, full_range: bool = False) -> Tensor:
    """Float Y'CbCr (channel axis -3) → rounded integer codes (int32), clipped to [0, 2^n-1]."""
    ys, yo, cs, co = _quant_params(bit_depth, full_range)
    scale = torch.tensor([ys, cs, cs], device=ycbcr.device, dtype=ycbcr.dtype).view(3, 1, 1)
    offset = torch.tensor([yo, co, co], device=ycbcr.device, dtype=ycbcr.dtype).view(3, 1, 1)
    codes = torch.round(ycbcr * scale + offset)
    return codes.clamp_(0, 2**bit_depth - 1).to(torch.int32)


# --------------------------------------------------------------------------------------
# Transfer functions
# --------------------------------------------------------------------------------------


def bt1886_eotf(v: Tensor, l_w: float = 100.0, l_b: float = 0.0) -> Tensor:
    """ITU-R BT.1886 Annex 1 EOTF: L = a·max(V + b, 0)^2.4, in cd/m².

    a = (L_W^(1/γ) - L_B^(1/γ))^γ, b = L_B^(1/γ) / (L_W^(1/γ) - L_B^(1/γ)), γ = 2.4.
    With l_b = 0 this is L = L_W·V^2.4.
    """
    g = 2.4
    lw, lb = l_w ** (1 / g), l_b ** (1 / g)
    a = (lw - lb) ** g
    b = lb / (lw - lb)
    return a * torch.clamp(v + b, min=0.0) ** g


def bt1886_inverse_eotf(l: Tensor, l_w: float = 100.0, l_b: float = 0.0) -> Tensor:
    """Inverse of :func:`bt1886_eotf`: V = (L/a)^(1/2.4) - b."""
    g = 2.4
    lw, lb = l_w ** (1 / g), l_b ** (1 / g)
    a = (lw - lb) ** g
    b = lb / (lw - lb)
    return torch.clamp(l / a, min=0.0) ** (1 / g) - b


def bt709_oetf(e: Tensor) -> Tensor:
    """ITU-R BT.709-6 item 1.2 OETF, scene light E ∈ [0,1] → E'."""
    return torch.where(e < 0.018, 4.5 * e, 1.099 * torch.clamp(e, min=0.018) ** 0.45 - 0.099)


def bt709_inverse_oetf(v: Tensor) -> Tensor:
    """Inverse of the BT.709 OETF (scene-referred linearisation)."""
    return torch.where(
        v < 0.081, v / 4.5, ((torch.clamp(v, min=0.081) + 0.099) / 1.099) ** (1 / 0.45)
    )


# SMPTE ST 2084:2014 §5.1 constants
_PQ_M1 = 2610.0 / 16384.0
_PQ_M2 = 2523.0 / 4096.0 * 128.0
_PQ_C1 = 3424.0 / 4096.0
_PQ_C2 = 2413.0 / 4096.0 * 32.0
_PQ_C3 = 2392.0 / 4096.0 * 32.0


def pq_decode(e: Tensor) -> Tensor:
    """SMPTE ST 2084 EOTF: PQ signal E' ∈ [0,1] → luminance in cd/m² (0…10000)."""
    ep = torch.clamp(e, min=0.0) ** (1.0 / _PQ_M2)
    y = torch.clamp(ep - _PQ_C1, min=0.0) / (_PQ_C2 - _PQ_C3 * ep)
    return PQ_MAX_NITS * y ** (1.0 / _PQ_M1)


def pq_encode(l: Tensor) -> Tensor:
    """SMPTE ST 2084 inverse EOTF: luminance in cd/m² → PQ signal E' ∈ [0,1]."""
    y = torch.clamp(l / PQ_MAX_NITS, min=0.0) ** _PQ_M1
    return ((_PQ_C1 + _PQ_C2 * y) / (1.0 + _PQ_C3 * y)) ** _PQ_M2


# --------------------------------------------------------------------------------------
# SDR → HDR10: the BT.2408 display-light mapping
# --------------------------------------------------------------------------------------


def bt2408_sdr_to_pq(rgb709: Tensor, sdr_white: float = SDR_REFERENCE_WHITE_NITS) -> Tensor:
    """Display-referred SDR BT.709 R'G'B' → PQ BT.2020 R'G'B' (ITU-R BT.2408-7 §5.1.1).

    The SDR signal is displayed through the BT.1886 EOTF (γ 2.4, black 0) with
    100% SDR at ``sdr_white`` cd/m² (BT.2408 HDR reference white, 203), converted
    from BT.709 to BT.2020 primaries (BT.2087) and PQ-encoded (ST 2084).
    """
    linear = bt1886_eotf(rgb709.clamp(0.0, 1.0), l_w=sdr_white)
    return pq_encode(bt709_to_bt2020(linear).clamp_(min=0.0))


# --------------------------------------------------------------------------------------
# Lookup tables: the transfer functions of the frame path
# --------------------------------------------------------------------------------------


class TransferLut:
    """A monotonic function of one variable as a lookup table on one device.

    Built once from the exact function (in float64), then ``lut(x)`` costs an index computation
    and a gather instead of the powers and divisions of the exact formula (the ST 2084 inverse
    EOTF becomes ~10× cheaper on a CPU). Two ways to place the samples:

    * ``"uniform"``: ``size`` equal intervals over [lo, hi] (x is clamped to it);
    * ``"float-bits"``: for x over many decades (lo > 0): the index is the float32 bit pattern
      of x shifted right, i.e. its exponent and first ``mantissa_bits`` mantissa bits, giving
      2^mantissa_bits intervals per octave: a constant *relative* step, so functions as steep
      near zero as PQ stay accurate down to near-black.

    By default each interval returns f at its centre (one gather; error ≤ half an interval
    times the slope). ``interpolate=True`` (uniform only) interpolates linearly between the
    samples (two gathers): for a convex f, such as the ST 2084 EOTF, the chords lie above the
    curve, so the result is never below the exact value.
    """

    def __init__(self, fn, lo: float, hi: float, mode: str = "uniform", size: int = 1 << 16,
                 mantissa_bits: int = 12, interpolate: bool = False, device: str | torch.device = "cpu") -> None:
        if mode not in ("uniform", "float-bits") or (interpolate and mode != "uniform"):
            raise ValueError(f"unsupported LUT mode {mode!r} (interpolate={interpolate})")
        self.mode, self.lo, self.hi, self.interpolate = mode, float(lo), float(hi), interpolate
        if mode == "uniform":
            self.scale = size / (self.hi - self.lo)
            # samples lo + k/scale, one spare above hi (x = hi lands on sample ``size``)
            x = self.lo + torch.arange(size + 2, dtype=torch.float64) / self.scale
            if not interpolate:
                x = x + 0.5 / self.scale  # interval centres
        else:
            if self.lo <= 0:
                raise ValueError("a float-bits LUT needs lo > 0")
            self.shift = 23 - int(mantissa_bits)
            bounds = torch.tensor([self.lo, self.hi], dtype=torch.float32).view(torch.int32)
            self.first = int(bounds[0]) >> self.shift
            seg = torch.arange(self.first, (int(bounds[1]) >> self.shift) + 1, dtype=torch.int64)
            centre = (seg << self.shift) + (1 << (self.shift - 1))
            x = centre.to(torch.int32).view(torch.float32).to(torch.float64)
        values = fn(x)
        self.table = values.to(device=device, dtype=torch.float32)
        if interpolate:
            self.slope = (values[1:] - values[:-1]).to(device=device, dtype=torch.float32)

    def __call__(self, x: Tensor) -> Tensor:
        """f(x) for float ``x`` of any shape, as float32 (float64 if ``x`` is float64)."""
        x32 = torch.clamp(x if x.dtype == torch.float32 else x.float(), self.lo, self.hi)
        if self.mode == "uniform":
            t = (x32.sub_(self.lo) if self.lo else x32).mul_(self.scale)
            # truncation = floor (t ≥ 0); int32 indices: a quarter of the conversion's memory
            # traffic of int64 and a slightly faster gather (measured on a CPU)
            idx = t.to(torch.int32)
            if self.interpolate:
                flat = idx.view(-1)
                frac = t.sub_(idx)
                out = torch.addcmul(self.table.index_select(0, flat).view(x.shape),
                                    self.slope.index_select(0, flat).view(x.shape), frac)
                return out.to(x.dtype) if x.dtype == torch.float64 else out
        else:
            idx = x32.view(torch.int32).bitwise_right_shift_(self.shift).sub_(self.first)
        out = self.table.index_select(0, idx.view(-1)).view(x.shape)
        return out.to(x.dtype) if x.dtype == torch.float64 else out


@lru_cache(maxsize=32)
def _lut(kind: str, param: float, device: str) -> TransferLut:
    if kind == "bt1886":
        return TransferLut(lambda v: bt1886_eotf(v, l_w=param), 0.0, 1.0, size=1 << 16, device=device)
    if kind == "pq-inverse":
        return TransferLut(pq_encode, 2.0**-30, PQ_MAX_NITS, mode="float-bits", mantissa_bits=12, device=device)
    if kind == "pq-decode":
        return TransferLut(pq_decode, 0.0, 1.0, size=1 << 16, interpolate=True, device=device)
    if kind == "pq-upper":
        # each interval [k, k+1)/2^16 returns the EOTF at its upper end: an upper bound, one gather
        return TransferLut(lambda e: pq_decode((e + 0.5 / 65536).clamp(max=1.0)), 0.0, 1.0, size=1 << 16, device=device)
    raise ValueError(kind)


def bt1886_eotf_lut(l_w: float = 100.0, device: str | torch.device = "cpu") -> TransferLut:
    """:func:`bt1886_eotf` (black 0) as a table of 65,536 intervals over V ∈ [0,1].

    Error ≤ half an interval times the slope: 2.4·L_W/131,072 cd/m² at V = 1 (0.004 cd/m² for
    L_W = 203), less below.
    """
    return _lut("bt1886", float(l_w), str(torch.device(device)))


def pq_inverse_eotf_lut(device: str | torch.device = "cpu") -> TransferLut:
    """:func:`pq_encode` (ST 2084 inverse EOTF, cd/m² → E') as a float-bits table.

    4,096 intervals per octave (relative step 2^-12) from 2^-30 cd/m² (where E' < 1e-5) to
    10,000 cd/m²: error < 2e-5 in E', i.e. < 0.02 of a 10-bit code.
    """
    return _lut("pq-inverse", 0.0, str(torch.device(device)))


def pq_eotf_lut(device: str | torch.device = "cpu") -> TransferLut:
    """:func:`pq_decode` (ST 2084 EOTF, E' → cd/m²) as 65,536 intervals with linear
    interpolation: the chords of the convex curve lie above it by < 0.01 % near 1,000 cd/m²."""
    return _lut("pq-decode", 0.0, str(torch.device(device)))


def pq_eotf_upper_lut(device: str | torch.device = "cpu") -> TransferLut:
    """:func:`pq_decode` (ST 2084 EOTF, E' → cd/m²) as an upper bound in 65,536 steps.

    Each interval of E' returns the EOTF at its upper end, and the EOTF increases, so the
    result is never below the exact value (but for float32 rounding, ~1e-7 relative) and at
    most one step's rise above it: < 0.2 cd/m² up to 1,000 cd/m², < 2.5 near 10,000. For light
    metering (one gather per pixel).
    """
    return _lut("pq-upper", 0.0, str(torch.device(device)))


def bt2408_sdr_to_pq_lut(rgb709: Tensor, sdr_white: float = SDR_REFERENCE_WHITE_NITS) -> Tensor:
    """:func:`bt2408_sdr_to_pq` through lookup tables, for the frame path.

    The same chain (BT.1886 EOTF with L_W = ``sdr_white``, BT.2087 primaries matrix, ST 2084
    inverse EOTF) with the two transfer functions taken from :func:`bt1886_eotf_lut` and
    :func:`pq_inverse_eotf_lut`: within 2e-5 of the exact float64 result (0.02 of a 10-bit
    code), several times faster on a CPU. Returns float32.
    """
    dev = rgb709.device
    eotf, inverse_pq = bt1886_eotf_lut(sdr_white, dev), pq_inverse_eotf_lut(dev)
    # the BT.2087 matrix has no negative entry: linear BT.709 ≥ 0 stays ≥ 0 in BT.2020
    return per_pixel_in_strips(lambda x: inverse_pq(bt709_to_bt2020(eotf(x))), rgb709)


#: pixels per strip of :func:`per_pixel_in_strips`: 3 float32 planes of 2^16 pixels (768 KiB)
#: stay in a CPU core's L2 cache through a chain of elementwise passes
STRIP_PIXELS = 1 << 16


def per_pixel_in_strips(fn: Callable[[Tensor], Tensor], x: Tensor, pixels: int = STRIP_PIXELS) -> Tensor:
    """``fn(x)`` for a per-pixel ``fn`` of ``(..., C, H, W)``, on a CPU one strip of rows at a time.

    A chain of elementwise passes over a whole batch streams every intermediate through main
    memory; on strips of about ``pixels`` pixels they stay in cache (about twice as fast for
    the BT.2408 tables on a 640×360 batch). ``fn`` must map each pixel's channel vector on its
    own and keep the shape (apart from dtype). On other devices, one call.
    """
    h, w = x.shape[-2:]
    rows = max(1, pixels // max(w, 1))
    if x.device.type != "cpu" or rows >= h:
        return fn(x)
    frames = x.reshape(-1, *x.shape[-3:])
    first = fn(frames[0, :, :rows])
    out = torch.empty((frames.shape[0], first.shape[0], h, w), dtype=first.dtype)
    for n in range(frames.shape[0]):
        for r0 in range(0, h, rows):
            out[n, :, r0:r0 + rows] = first if (n, r0) == (0, 0) else fn(frames[n, :, r0:r0 + rows])
    return out.view(*x.shape[:-3], first.shape[0], h, w)


# --------------------------------------------------------------------------------------
# ICtCp and ΔE_ITP (BT.2100 / BT.2124)
# --------------------------------------------------------------------------------------

# BT.2100-2 Table 6: BT.2020 RGB → LMS (×1/4096) and L'M'S' → ICtCp (×1/4096)
_LMS_FROM_BT2020 = (
    (1688.0 / 4096, 2146.0 / 4096, 262.0 / 4096),
    (683.0 / 4096, 2951.0 / 4096, 462.0 / 4096),
    (99.0 / 4096, 309.0 / 4096, 3688.0 / 4096),
)
_ICTCP_FROM_LMS_PQ = (
    (0.5, 0.5, 0.0),
    (6610.0 / 4096, -13613.0 / 4096, 7003.0 / 4096),
    (17933.0 / 4096, -17390.0 / 4096, -543.0 / 4096),
)


def bt2020_to_ictcp(rgb_linear_nits: Tensor) -> Tensor:
    """Linear BT.2020 RGB in cd/m² → ICtCp (PQ variant), ITU-R BT.2100-2 Table 6."""
    lms = apply_matrix(rgb_linear_nits, torch.tensor(_LMS_FROM_BT2020, dtype=torch.float64))
    return apply_matrix(pq_encode(lms), torch.tensor(_ICTCP_FROM_LMS_PQ, dtype=torch.float64))


def delta_e_itp(ictcp_a: Tensor, ictcp_b: Tensor) -> Tensor:
    """ITU-R BT.2124-0 colour difference: 720·√(ΔI² + (½ΔCt)² + ΔCp²), per pixel."""
    d = ictcp_a - ictcp_b
    di, dct, dcp = d.unbind(-3)
    return 720.0 * torch.sqrt(di * di + 0.25 * dct * dct + dcp * dcp)


# --------------------------------------------------------------------------------------
# PU21 perceptually uniform luminance (for temporal and banding measurements)
# --------------------------------------------------------------------------------------

#: PU21 "banding_glare" parameters p1…p7 (Mantiuk & Azimi, "PU21: A novel perceptually uniform
#: encoding for adapting existing quality metrics for HDR", PCS 2021; gfxdisp/pu21).
PU21_BANDING_GLARE = (0.353487901, 0.3734658629, 8.277049286e-05, 0.9062562627,
                      0.09150303166, 0.9099517204, 596.3148142)


def pu21_encode(y_nits: Tensor) -> Tensor:
    """PU21 encoding of absolute luminance (cd/m²), "banding_glare" variant (PCS 2021):

    V = max(p7·(((p1 + p2·Y^p4) / (1 + p3·Y^p4))^p5 − p6), 0), Y clamped to [0.005, 10000].
    One PU21 unit is roughly one just-noticeable difference; 0.005 cd/m² → 0, 100 → ≈ 256.
    """
    p1, p2, p3, p4, p5, p6, p7 = PU21_BANDING_GLARE
    yp = y_nits.clamp(0.005, 10000.0) ** p4
    return (p7 * (((p1 + p2 * yp) / (1.0 + p3 * yp)) ** p5 - p6)).clamp(min=0.0)


# --------------------------------------------------------------------------------------
# BT.2390 EETF (highlight roll-off in the PQ domain)
# --------------------------------------------------------------------------------------


def bt2390_eetf(
    e: Tensor,
    source_black: float = 0.0,
    source_peak: float = 10000.0,
    target_black: float = 0.0,
    target_peak: float = 1000.0,
) -> Tensor:
    """ITU-R BT.2390-10 §5.4.1 EETF on a PQ signal (luminances given in cd/m²).

    Normalises E' to the source range, applies the Hermite-spline knee above
    KS = 1.5·maxLum - 0.5 to roll off to the target peak, lifts the black with
    b·(1-E)^4, and maps back to absolute PQ.
    """
    src_b, src_w = float(pq_encode(torch.tensor(source_black, dtype=torch.float64))), float(
        pq_encode(torch.tensor(source_peak, dtype=torch.float64))
    )
    min_lum = (float(pq_encode(torch.tensor(target_black, dtype=torch.float64))) - src_b) / (src_w - src_b)
    max_lum = (float(pq_encode(torch.tensor(target_peak, dtype=torch.float64))) - src_b) / (src_w - src_b)
    e1 = ((e - src_b) / (src_w - src_b)).clamp(0.0, 1.0)
    ks = 1.5 * max_lum - 0.5
    if ks < 1.0:
        t = ((e1 - ks) / (1.0 - ks)).clamp(0.0, 1.0)
        t2, t3 = t * t, t * t * t
        spline = (
            (2 * t3 - 3 * t2 + 1) * ks
            + (t3 - 2 * t2 + t) * (1.0 - ks)
            + (-2 * t3 + 3 * t2) * max_lum
        )
        e2 = torch.where(e1 < ks, e1, spline)
    else:
        e2 = e1
    b = min_lum
    e3 = e2 + b * (1.0 - e2).clamp(min=0.0) ** 4
    return e3 * (src_w - src_b) + src_b


def pq_roll_off_knee_nits(target_peak: float, source_peak: float = PQ_MAX_NITS) -> float:
    """Luminance (cd/m²) of the BT.2390-10 EETF knee KS = 1.5·maxLum − 0.5 (source black 0).

    Signals below it pass the EETF unchanged.
    """
    src_w = float(pq_encode(torch.tensor(source_peak, dtype=torch.float64)))
    max_lum = float(pq_encode(torch.tensor(target_peak, dtype=torch.float64))) / src_w
    ks = 1.5 * max_lum - 0.5
    return float(pq_decode(torch.tensor(min(ks, 1.0) * src_w, dtype=torch.float64)))


def pq_roll_off(rgb_pq: Tensor, target_peak: float, source_peak: float = PQ_MAX_NITS) -> Tensor:
    """Roll PQ R'G'B' highlights off to ``target_peak`` cd/m², keeping hue and saturation.

    The ITU-R BT.2390-10 §5.4.1 EETF (:func:`bt2390_eetf`, black untouched) is applied to
    max(R', G', B'), and the three components are scaled by the same linear-light ratio, so
    max(R, G, B) — what CTA-861.3-A MaxCLL measures — never exceeds ``target_peak``, and pixels
    below the knee (:func:`pq_roll_off_knee_nits`) are returned unchanged. Only the pixels
    above the knee are computed.
    """
    m = rgb_pq.amax(dim=-3, keepdim=True)
    src_w = float(pq_encode(torch.tensor(source_peak, dtype=torch.float64)))
    ks_signal = float(pq_encode(torch.tensor(pq_roll_off_knee_nits(target_peak, source_peak), dtype=torch.float64)))
    above = m > ks_signal
    if not bool(above.any()):
        return rgb_pq
    out = rgb_pq.clone()
    mask = above.expand_as(rgb_pq)
    sel_m = m.expand_as(rgb_pq)[mask]
    sel = rgb_pq[mask].clamp(0.0, src_w)
    m_out = bt2390_eetf(sel_m.clamp(max=src_w), 0.0, source_peak, 0.0, target_peak)
    ratio = pq_decode(m_out) / pq_decode(sel_m).clamp(min=1e-12)
    out[mask] = pq_encode((pq_decode(sel) * ratio).clamp(max=target_peak))
    return out


# --------------------------------------------------------------------------------------
# Chroma resampling (siting per ITU-T H.273 chroma_sample_loc_type / FFmpeg AVChromaLocation)
# --------------------------------------------------------------------------------------

# CHROMA_SITING (H.273 chroma sample positions) is plain data in hdrvideo.standards (re-exported).


@lru_cache(maxsize=64)
def _linear_taps(n_out: int, n_in: int, factor: int, phase: float) -> tuple[list[int], list[int], list[float]]:
    """Indices and weights of the two-tap linear interpolation for one axis."""
    offset = phase * (factor - 1)  # chroma sample position in luma units within its cell
    i0, i1, w = [], [], []
    for x in range(n_out):
        pos = (x - offset) / factor
        lo = int(pos // 1)
        frac = pos - lo
        i0.append(min(max(lo, 0), n_in - 1))
        i1.append(min(max(lo + 1, 0), n_in - 1))
        w.append(frac)
    return i0, i1, w


def _upsample_axis(c: Tensor, dim: int, n_out: int, factor: int, phase: float) -> Tensor:
    if factor == 1:
        return c
    n = c.shape[dim]
    if factor == 2 and n_out == 2 * n and n > 1:
        # the same interpolation, by slices written straight into the output: output 2i sits at
        # chroma position i - phase/2 and output 2i+1 at i + (1 - phase)/2 (edges replicate)
        shape = list(c.shape)
        shape[dim] = n_out
        out = c.new_empty(shape)
        pairs = out.unflatten(dim, (n, 2))
        even, odd = pairs.select(dim + 1, 0), pairs.select(dim + 1, 1)
        head, tail = c.narrow(dim, 0, n - 1), c.narrow(dim, 1, n - 1)
        if phase == 0:
            even.copy_(c)
        else:
            torch.lerp(tail, head, phase / 2, out=even.narrow(dim, 1, n - 1))
            even.narrow(dim, 0, 1).copy_(c.narrow(dim, 0, 1))
        if phase == 1:
            odd.copy_(c)
        else:
            torch.lerp(head, tail, (1 - phase) / 2, out=odd.narrow(dim, 0, n - 1))
            odd.narrow(dim, n - 1, 1).copy_(c.narrow(dim, n - 1, 1))
        return out
    i0, i1, w = _linear_taps(n_out, c.shape[dim], factor, phase)
    dev = c.device
    a = c.index_select(dim, torch.tensor(i0, device=dev))
    b = c.index_select(dim, torch.tensor(i1, device=dev))
    shape = [1] * c.dim()
    shape[dim] = n_out
    wt = torch.tensor(w, device=dev, dtype=c.dtype).view(shape)
    return torch.lerp(a, b, wt)


def chroma_upsample(chroma: Tensor, height: int, width: int, siting: str = "left") -> Tensor:
    """Linear-interpolate subsampled chroma planes ``(..., h, w)`` to ``(..., height, width)``.

    The phase follows the chroma siting (H.273 Table 5 / Figure 1), so a
    co-sited sample is reproduced exactly at its luma position; edges replicate.
    """
    fy, fx = height // chroma.shape[-2], width // chroma.shape[-1]
    ph, pv = CHROMA_SITING[siting]
    out = _upsample_axis(chroma, chroma.dim() - 1, width, fx, ph)
    return _upsample_axis(out, chroma.dim() - 2, height, fy, pv)


def _downsample_taps(phase: float) -> list[float]:
    # 2:1 decimation; co-sited: [1,2,1]/4 centred on the even sample; centred: [1,3,3,1]/8
    # centred between the two samples (the adjoints of the linear interpolation above).
    if phase == 0.0:
        k = [1.0, 2.0, 1.0, 0.0]
    elif phase == 0.5:
        k = [1.0, 3.0, 3.0, 1.0]
    else:  # bottom: mirror of co-sited
        k = [0.0, 1.0, 2.0, 1.0]
    total = sum(k)
    return [v / total for v in k]


def _decimate(x: Tensor, taps: list[float], dim: int) -> Tensor:
    """2:1 decimation along ``dim`` with a 4-tap filter over samples 2j-1 … 2j+2 (edges replicate).

    Computed from the even and odd samples as strided views, with no padded copy of ``x``.
    """
    n = x.shape[dim] // 2
    pairs = x.narrow(dim, 0, 2 * n).unflatten(dim, (n, 2))
    even, odd = pairs.select(dim + 1, 0), pairs.select(dim + 1, 1)  # samples 2j and 2j+1
    w_prev, w_even, w_odd, w_next = taps  # weights of samples 2j-1, 2j, 2j+1, 2j+2
    out = torch.mul(even, w_even) if w_even else torch.zeros_like(even)
    if w_odd:
        out.add_(odd, alpha=w_odd)
    if w_prev:  # sample 2j-1: the previous odd one; the first output replicates sample 0
        out.narrow(dim, 1, n - 1).add_(odd.narrow(dim, 0, n - 1), alpha=w_prev)
        out.narrow(dim, 0, 1).add_(even.narrow(dim, 0, 1), alpha=w_prev)
    if w_next:  # sample 2j+2: the next even one; the last output replicates sample 2n-1
        out.narrow(dim, 0, n - 1).add_(even.narrow(dim, 1, n - 1), alpha=w_next)
        out.narrow(dim, n - 1, 1).add_(odd.narrow(dim, n - 1, 1), alpha=w_next)
    return out


def chroma_downsample(chroma: Tensor, siting: str = "left") -> Tensor:
    """4:4:4 → 4:2:0 decimation of ``(N,C,H,W)`` chroma with a siting-aware low-pass filter.

    Output sample j on an axis is centred on input position 2j (co-sited), 2j+0.5 (centred) or
    2j+1 (bottom); taps [1,2,1]/4 and [1,3,3,1]/8 remove the aliasing band above half Nyquist.
    Separable, computed with strided slices (no convolution), vertically first so the horizontal
    pass sees half the rows. H and W must be even.
    """
    ph, pv = CHROMA_SITING[siting]
    x = _decimate(chroma, _downsample_taps(pv), chroma.dim() - 2)
    return _decimate(x, _downsample_taps(ph), chroma.dim() - 1)


# --------------------------------------------------------------------------------------
# Planes ↔ R'G'B' (decode and encode ends of the pipeline)
# --------------------------------------------------------------------------------------


def _dequant_plane(x: Tensor, scale: float, offset: float, dtype: torch.dtype) -> Tensor:
    return x.to(dtype, copy=True).sub_(offset).mul_(1.0 / scale)


@lru_cache(maxsize=None)
def _chroma_to_rgb_f64(matrix: str) -> tuple[tuple[float, float], ...]:
    """The Cb and Cr columns of the inverse Y'CbCr matrix (its Y' column is all ones).

    R' = Y' + 2(1-K_R)·Cr, G' = Y' - (2K_B(1-K_B)/K_G)·Cb - (2K_R(1-K_R)/K_G)·Cr,
    B' = Y' + 2(1-K_B)·Cb (BT.601-7 §2.5.2, BT.709-6 items 3.2-3.3, BT.2020-2 Table 4 solved for R'G'B').
    """
    kr, kb = KR_KB[matrix]
    kg = 1.0 - kr - kb
    return ((0.0, 2 * (1 - kr)), (-2 * kb * (1 - kb) / kg, -2 * kr * (1 - kr) / kg), (2 * (1 - kb), 0.0))


def planes_to_rgb(
    y: Tensor,
    cb: Tensor | None,
    cr: Tensor | None,
    matrix: str,
    bit_depth: int,
    full_range: bool,
    siting: str = "left",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Integer Y'CbCr planes ``(N,H,W)``, ``(N,h,w)`` → float R'G'B' ``(N,3,H,W)``, unclipped.

    Dequantises per BT.709/BT.2100 (:func:`dequantize_ycbcr`), upsamples chroma with the
    given siting and applies the inverse Y'CbCr matrix. ``cb``/``cr`` None means greyscale.
    The chroma terms of the matrix are applied at chroma resolution and then upsampled (the
    interpolation is linear, so this equals interpolating Cb, Cr first), and Y' is added last.
    """
    ys, yo, _, _ = _quant_params(bit_depth, full_range)
    yf = _dequant_plane(y, ys, yo, dtype)
    n, height, width = yf.shape
    if cb is None or cr is None:
        return yf.unsqueeze(1).expand(n, 3, height, width).contiguous()
    terms = _chroma_terms(cb, cr, matrix, bit_depth, full_range, siting, height, width, dtype)
    return terms.add_(yf.unsqueeze(1))


def _chroma_terms(cb: Tensor, cr: Tensor, matrix: str, bit_depth: int, full_range: bool, siting: str,
                  height: int, width: int, dtype: torch.dtype) -> Tensor:
    """R' - Y', G' - Y', B' - Y' ``(N,3,H,W)`` of integer chroma planes: the inverse matrix's
    chroma columns applied at chroma resolution, then upsampled to the luma size."""
    _, _, cs, co = _quant_params(bit_depth, full_range)
    cbf, crf = _dequant_plane(cb, cs, co, dtype), _dequant_plane(cr, cs, co, dtype)
    terms = cbf.new_empty((cbf.shape[0], 3, *cbf.shape[-2:]))
    for i, (k_cb, k_cr) in enumerate(_chroma_to_rgb_f64(matrix)):
        out = terms[:, i]
        if k_cb == 0.0:
            torch.mul(crf, k_cr, out=out)
        else:
            torch.mul(cbf, k_cb, out=out)
            if k_cr != 0.0:
                out.add_(crf, alpha=k_cr)
    if terms.shape[-2:] != (height, width):
        terms = chroma_upsample(terms, height, width, siting)
    return terms


def rgb_to_planes(
    rgb: Tensor,
    matrix: str = "bt2020",
    bit_depth: int = 10,
    full_range: bool = False,
    siting: str = "left",
    dtype: torch.dtype = torch.int32,
) -> tuple[Tensor, Tensor, Tensor]:
    """Float R'G'B' ``(N,3,H,W)`` → 4:2:0 integer planes Y' ``(N,H,W)``, Cb, Cr ``(N,H/2,W/2)``.

    Non-constant-luminance Y'CbCr (BT.2020 Table 4 for HDR10), siting-aware chroma
    decimation (:func:`chroma_downsample`), rounding to ``bit_depth`` codes (``dtype``).
    Cb = (B'-Y')/(2(1-K_B)) and Cr = (R'-Y')/(2(1-K_R)) are decimated as B'-Y' and R'-Y' and
    scaled afterwards (the decimation is linear).
    """
    kr, kb = KR_KB[matrix]
    kg = 1.0 - kr - kb
    ys, yo, cs, co = _quant_params(bit_depth, full_range)
    top = 2**bit_depth - 1
    r, g, b = rgb.unbind(-3)
    luma = torch.mul(r, kr).add_(g, alpha=kg).add_(b, alpha=kb)
    diff = luma.new_empty((*luma.shape[:-2], 2, *luma.shape[-2:]))
    torch.sub(b, luma, out=diff.select(-3, 0))
    torch.sub(r, luma, out=diff.select(-3, 1))
    y = luma.mul_(ys).add_(yo).round_().clamp_(0, top).to(dtype)
    c = chroma_downsample(diff, siting)
    c.select(-3, 0).mul_(cs / (2 * (1 - kb)))
    c.select(-3, 1).mul_(cs / (2 * (1 - kr)))
    c = c.add_(co).round_().clamp_(0, top).to(dtype)
    return y, c.select(-3, 0), c.select(-3, 1)


def convert_primaries_display(rgb: Tensor, src: str, dst: str, gamma: float = 2.4) -> Tensor:
    """Display-referred gamut conversion of gamma-encoded R'G'B' between primary sets.

    Linearises with a pure power ``gamma`` (BT.1886 with zero black), applies the RP 177
    primaries matrix, clips to the destination gamut, and re-encodes. Used to bring SD
    (BT.601) or wide-gamut SDR sources into the BT.709 contract of the process stage.
    """
    if src == dst:
        return rgb
    lin = rgb.clamp(0.0, 1.0) ** gamma
    out = apply_matrix(lin, rgb_to_rgb_matrix(src, dst)).clamp_(0.0, 1.0)
    return out ** (1.0 / gamma)


# --------------------------------------------------------------------------------------
# HDR10 static metadata measurement
# --------------------------------------------------------------------------------------


def content_light_level(rgb_pq: Tensor) -> tuple[Tensor, Tensor]:
    """Per-frame (maximum, average) of max(R,G,B) in cd/m², CTA-861.3-A Annex A / P.2.

    ``rgb_pq`` is (N,3,H,W) PQ R'G'B'. MaxCLL is the maximum of the first result over the
    whole programme and MaxFALL the maximum of the second.
    """
    # the PQ EOTF is monotonic: decode only the largest of R', G', B' (a third of the work)
    max_rgb = pq_decode(rgb_pq.amax(dim=-3).clamp_(0.0, 1.0))
    return max_rgb.amax(dim=(-2, -1)), max_rgb.mean(dim=(-2, -1))


def content_light_level_planes(
    y: Tensor,
    cb: Tensor,
    cr: Tensor,
    matrix: str = "bt2020",
    bit_depth: int = 10,
    full_range: bool = False,
    siting: str = "left",
) -> tuple[Tensor, Tensor]:
    """:func:`content_light_level` of Y'CbCr planes (PQ), never below it, without full R'G'B'.

    What ``content_light_level(planes_to_rgb(...).clamp(0, 1))`` measures, per frame (maximum,
    average of max(R,G,B) in cd/m², CTA-861.3-A), in fewer passes over memory:

    * max(R', G', B') = Y' + max(R'-Y', G'-Y', B'-Y'): the chroma terms of
      :func:`planes_to_rgb`, their maximum, one addition of Y' (no clamped R'G'B' is stored;
      clamping commutes with the maximum);
    * the ST 2084 EOTF from :func:`pq_eotf_upper_lut`, never below the exact curve (< 0.2
      cd/m² above it up to 1,000 cd/m²), and a 2^-20 margin on the signal (≥ 8.7e-6 in relative luminance) so
      float32 rounding, in the table and in the frame sums, cannot pull the result below.
    """
    ys, yo, _, _ = _quant_params(bit_depth, full_range)
    height, width = y.shape[-2:]
    terms = _chroma_terms(cb, cr, matrix, bit_depth, full_range, siting, height, width, torch.float32)
    signal = terms.amax(dim=-3)
    # Y' + max term, plus 2^-20 (0.001 of a 10-bit code) so float32 rounding cannot pull it below
    signal.add_(y.to(torch.float32), alpha=1.0 / ys).add_(2.0**-20 - yo / ys)
    nits = pq_eotf_upper_lut(signal.device)(signal)  # clamps the signal to [0, 1]
    return nits.amax(dim=(-2, -1)), nits.mean(dim=(-2, -1))


# ---- HDR→SDR down-conversions (BT.2446 Method A and C, filmic) ----
#
# Used by hdrvideo.training.synthesis to make SDR renditions of HDR10 grades.  Every function
# takes linear BT.2020 display light in cd/m² (channel axis -3) unless stated otherwise.

import math  # noqa: E402

__all__ += [
    "luminance",
    "bt2390_tone_map",
    "bt2446a_tone_map",
    "BT2446C_K1",
    "BT2446C_K2",
    "BT2446C_K3",
    "BT2446C_K4",
    "BT2446C_Y_SDR_IP",
    "bt2446c_curve_parameters",
    "bt2446c_curve",
    "bt2446c_tone_map",
    "hable_filmic",
    "filmic_tone_map",
    "sdr_bt709_signal",
]


def luminance(rgb_linear: Tensor, primaries: str = "bt2020") -> Tensor:
    """Luminance Y of linear RGB (row 2 of the SMPTE RP 177 §3.3 normalised primary matrix).

    Returns shape ``(..., 1, H, W)`` (the channel axis kept, size 1), same units as the input.
    """
    row = rgb_to_xyz_matrix(primaries)[1]
    w = row.to(device=rgb_linear.device, dtype=rgb_linear.dtype).view(3, 1, 1)
    return (rgb_linear * w).sum(dim=-3, keepdim=True)


def bt2390_tone_map(
    rgb_nits: Tensor,
    source_peak: float,
    target_peak: float,
    target_black: float = 0.0,
    mode: str = "maxrgb",
) -> Tensor:
    """Tone-map linear light (cd/m²) with the ITU-R BT.2390-10 §5.4.1 EETF → cd/m² ≤ ``target_peak``.

    The EETF (:func:`bt2390_eetf`, Hermite knee in the PQ domain) is applied either to each of
    the PQ-encoded R, G, B components (``mode="rgb"``, the per-component application of
    BT.2390 §5.4.1), or to max(R, G, B) with all three components scaled by the same ratio
    (``mode="maxrgb"``, hue- and saturation-preserving; BT.2390 §5.4.1 allows applying the
    EETF to a luminance-like component).  Inputs above ``source_peak`` are first limited to it.
    Used for the HDR grade's roll-off to a 1000 cd/m² mastering peak and for the BT.2390-style
    HDR→SDR down-conversion to a 100–203 cd/m² SDR display.
    """
    x = rgb_nits.clamp(min=0.0)
    kw = dict(source_black=0.0, source_peak=source_peak, target_black=target_black, target_peak=target_peak)
    if mode == "rgb":
        e = pq_encode(x.clamp(max=source_peak))
        return pq_decode(bt2390_eetf(e, **kw)).clamp(max=target_peak)
    if mode != "maxrgb":
        raise ValueError(f"unknown mode {mode!r}; expected 'maxrgb' or 'rgb'")
    m = x.amax(dim=-3, keepdim=True)
    m_out = pq_decode(bt2390_eetf(pq_encode(m.clamp(max=source_peak)), **kw)).clamp(max=target_peak)
    ratio = torch.where(m > 0, m_out / m.clamp(min=1e-12), torch.zeros_like(m))
    return x * ratio


def bt2446a_tone_map(rgb2020_nits: Tensor, l_hdr: float = 1000.0, l_sdr: float = 100.0) -> Tensor:
    """Report ITU-R BT.2446-1 §4.1 (Method A) HDR→SDR: BT.2020 display light → SDR BT.2020 R'G'B'.

    Steps of §4.1: normalise by L_HDR and apply the 1/2.4 gamma; luma Y' (BT.2020 weights);
    ρ_HDR = 1 + 32·(L_HDR/10000)^(1/2.4), Y'_p = log(1 + (ρ_HDR − 1)·Y') / log(ρ_HDR);
    the knee Y'_c = 1.077·Y'_p (Y'_p ≤ 0.7399), −1.1510·Y'_p² + 2.7811·Y'_p − 0.6302
    (0.7399 < Y'_p < 0.9909), 0.5·Y'_p + 0.5 (Y'_p ≥ 0.9909);
    Y'_SDR = (ρ_SDR^Y'_c − 1)/(ρ_SDR − 1) with ρ_SDR = 1 + 32·(L_SDR/10000)^(1/2.4);
    colour correction f = Y'_SDR/(1.1·Y'), C'b,C'r scaled by f, Y'_TMO = Y'_SDR − max(0.1·C'r,TMO, 0).

    Returns the non-linear (γ 2.4, BT.1886 with L_B = 0) SDR R'G'B' in BT.2020 primaries, not
    clipped (gamut mapping to BT.709 is the caller's step).
    """
    rp = (rgb2020_nits.clamp(min=0.0) / l_hdr).clamp(max=1.0) ** (1.0 / 2.4)
    ycc = rgb_to_ycbcr(rp, "bt2020")
    y, cb, cr = ycc.unbind(-3)
    rho_hdr = 1.0 + 32.0 * (l_hdr / 10000.0) ** (1.0 / 2.4)
    rho_sdr = 1.0 + 32.0 * (l_sdr / 10000.0) ** (1.0 / 2.4)
    yp = torch.log1p((rho_hdr - 1.0) * y.clamp(min=0.0)) / torch.log(torch.tensor(rho_hdr, dtype=y.dtype))
    yc = torch.where(
        yp <= 0.7399,
        1.077 * yp,
        torch.where(yp < 0.9909, -1.1510 * yp * yp + 2.7811 * yp - 0.6302, 0.5 * yp + 0.5),
    )
    y_sdr = (rho_sdr**yc - 1.0) / (rho_sdr - 1.0)
    f = y_sdr / (1.1 * y).clamp(min=1e-6)
    cb_t, cr_t = f * cb, f * cr
    y_t = y_sdr - (0.1 * cr_t).clamp(min=0.0)
    return ycbcr_to_rgb(torch.stack((y_t, cb_t, cr_t), dim=-3), "bt2020")


#: Report ITU-R BT.2446-1 §6.1.4 (Method C) tone-curve parameters, as printed there.
BT2446C_K1 = 0.83802
BT2446C_K2 = 15.09968
BT2446C_K3 = 0.74204
BT2446C_K4 = 78.99439
#: SDR luminance (cd/m²) at the inflection point; Y_HDR,ip = Y_SDR,ip / k1 ≈ 69.8 cd/m².
BT2446C_Y_SDR_IP = 58.5


def bt2446c_curve_parameters(
    k1: float = BT2446C_K1, k3: float = BT2446C_K3, y_sdr_ip: float = BT2446C_Y_SDR_IP
) -> tuple[float, float, float]:
    """(Y_HDR,ip, k2, k4) of the BT.2446-1 §6.1.4 curve derived from k1, k3 and Y_SDR,ip.

    Y_HDR,ip = Y_SDR,ip / k1; k2 = k1·(1 − k3)·Y_HDR,ip and k4 = k1·Y_HDR,ip − k2·ln(1 − k3)
    make the log segment continuous in value and slope at the inflection point.  For the
    Report's k1, k3 and Y_SDR,ip this reproduces its printed k2 = 15.09968 and k4 = 78.99439
    to within 0.1% (the printed constants are used by default).
    """
    y_hdr_ip = y_sdr_ip / k1
    k2 = k1 * (1.0 - k3) * y_hdr_ip
    k4 = k1 * y_hdr_ip - k2 * math.log(1.0 - k3)
    return y_hdr_ip, k2, k4


def bt2446c_curve(
    y_hdr: Tensor,
    k1: float = BT2446C_K1,
    k2: float = BT2446C_K2,
    k3: float = BT2446C_K3,
    k4: float = BT2446C_K4,
    y_sdr_ip: float = BT2446C_Y_SDR_IP,
) -> Tensor:
    """BT.2446-1 §6.1.4 tone curve on luminance in cd/m²: Y_SDR = k1·Y_HDR below
    Y_HDR,ip = Y_SDR,ip/k1, k2·ln(Y_HDR/Y_HDR,ip − k3) + k4 above.  Output in SDR cd/m²
    (100 = 100% SDR); 1000 cd/m² maps to ≈ 118 cd/m², i.e. ≈ 107% SDR signal (super-white)."""
    y_ip = y_sdr_ip / k1
    y = y_hdr.clamp(min=0.0)
    log_seg = k2 * torch.log((y / y_ip - k3).clamp(min=1e-6)) + k4
    return torch.where(y < y_ip, k1 * y, log_seg)


def bt2446c_tone_map(
    rgb2020_nits: Tensor,
    alpha: float = 0.15,
) -> Tensor:
    """Report ITU-R BT.2446-1 §6.1 (Method C) HDR→SDR on linear BT.2020 display light (cd/m²).

    §6.1.2 crosstalk matrix [[1−2α, α, α], [α, 1−2α, α], [α, α, 1−2α]] (0 ≤ α ≤ 0.33);
    §6.1.3–6.1.5 Yxy conversion, tone curve on Y (:func:`bt2446c_curve`), x and y kept — which
    equals scaling XYZ, hence RGB, by Y_SDR/Y_HDR; §6.1.6 inverse crosstalk matrix.  The
    optional §6.1.8 chroma correction is not applied.  Returns linear SDR BT.2020 display light
    in cd/m² (100 = 100% SDR), unclipped; the caller applies the inverse SDR EOTF (§6.1.7).
    """
    a = float(alpha)
    ct = torch.tensor([[1 - 2 * a, a, a], [a, 1 - 2 * a, a], [a, a, 1 - 2 * a]], dtype=torch.float64)
    x = apply_matrix(rgb2020_nits.clamp(min=0.0), ct)
    y = luminance(x, "bt2020")
    y_sdr = bt2446c_curve(y)
    ratio = torch.where(y > 0, y_sdr / y.clamp(min=1e-12), torch.zeros_like(y))
    return apply_matrix(x * ratio, torch.linalg.inv(ct))


def hable_filmic(x: Tensor) -> Tensor:
    """J. Hable's filmic curve ("Uncharted 2: HDR Lighting", GDC 2010), unnormalised:
    ((x(Ax+CB)+DE)/(x(Ax+B)+DF)) − E/F with A=0.15, B=0.50, C=0.10, D=0.20, E=0.02, F=0.30."""
    a, b, c, d, e, f = 0.15, 0.50, 0.10, 0.20, 0.02, 0.30
    x = x.clamp(min=0.0)
    return (x * (a * x + c * b) + d * e) / (x * (a * x + b) + d * f) - e / f


def filmic_tone_map(
    rgb_nits: Tensor, exposure: float = 2.0, white: float = 11.2, reference_white: float = SDR_REFERENCE_WHITE_NITS
) -> Tensor:
    """Filmic HDR→SDR: Hable's curve per component on ``exposure``·L/L_ref, normalised by the
    curve at the linear white point ``white`` (GDC 2010; the de-facto game "filmic" look).

    ``reference_white``: the HDR level treated as 1.0 (BT.2408 HDR Reference White, 203 cd/m²).
    Returns linear SDR display light relative to the SDR peak (1.0 = 100% SDR), in [0, 1]
    for inputs up to ``white``·L_ref/``exposure``.
    """
    x = rgb_nits.clamp(min=0.0) * (exposure / reference_white)
    w = hable_filmic(torch.tensor(white, dtype=torch.float64)).item()
    return (hable_filmic(x) / w).clamp(max=1.0)


def sdr_bt709_signal(rgb2020_relative: Tensor, l_w: float = 1.0) -> Tensor:
    """Linear SDR BT.2020 display light → BT.709 R'G'B' signal in [0, 1].

    BT.2020 → BT.709 primaries (inverse of the BT.2087-0 §2 matrix), gamut clip of each
    component to [0, l_w], then the ITU-R BT.1886 Annex 1 inverse EOTF (γ 2.4, L_B = 0, peak
    ``l_w`` in the input's units; relative input has l_w = 1).
    """
    lin709 = bt2020_to_bt709(rgb2020_relative).clamp(0.0, l_w)
    return bt1886_inverse_eotf(lin709, l_w=l_w, l_b=0.0).clamp(0.0, 1.0)


def black_codes(bit_depth: int = 10, full_range: bool = False) -> tuple[int, int]:
    """(Y′, Cb = Cr) codes of black, R′G′B′ = 0 (BT.2100-2 Table 9): 64 and 512 for 10-bit limited."""
    _ys, yo, _cs, co = _quant_params(bit_depth, full_range)
    return int(yo), int(co)


__all__ += ["black_codes"]


# ---- SDR→HDR highlight expansion: the inverse of BT.2446 Method C, generalised ----
#
# Report ITU-R BT.2446-1 §6.1.4 (Method C) compresses HDR luminance with a linear segment up to
# an inflection point and a logarithmic segment above it (:func:`bt2446c_curve`).  Solved for
# Y_HDR, that curve is linear below the inflection point and *exponential* above it — an inverse
# tone mapping operator (ITMO) whose knee is where expansion starts.  :func:`sdr_expansion_curve`
# is that inverse with its three degrees of freedom (linear gain, inflection point, value at 100 %
# SDR) set from user controls (SDR reference white, knee, target peak) instead of the Report's
# constants; with the Report's constants it *is* the Report's inverse (:func:`bt2446c_inverse_curve`).
# :func:`hdr_expand_sdr_to_pq` applies it to luminance, as Method C does (§6.1.3–6.1.5: tone curve
# on Y, chromaticity x, y kept), so hue and saturation are preserved.
#
# libplacebo's ``bt2446a_inv`` (src/tone_mapping.c) takes the other route, BT.2446-1 Method A's
# SDR→HDR polynomial Y_HDR = Y''^E (Y'' = 255·Y'_SDR, E quadratic in Y'') normalised to its
# output peak; it is not implemented here.

__all__ += [
    "bt2446c_inverse_curve",
    "sdr_expansion_parameters",
    "sdr_expansion_curve",
    "hdr_expand_sdr_to_pq",
]


def bt2446c_inverse_curve(
    y_sdr: Tensor,
    k1: float = BT2446C_K1,
    k2: float = BT2446C_K2,
    k3: float = BT2446C_K3,
    k4: float = BT2446C_K4,
    y_sdr_ip: float = BT2446C_Y_SDR_IP,
) -> Tensor:
    """Inverse of the BT.2446-1 §6.1.4 tone curve (:func:`bt2446c_curve`), SDR → HDR cd/m².

    Y_HDR = Y_SDR / k1 below Y_SDR,ip, and Y_HDR = Y_HDR,ip · (exp((Y_SDR − k4) / k2) + k3)
    above it (Y_HDR,ip = Y_SDR,ip / k1): the log segment k2·ln(Y_HDR/Y_HDR,ip − k3) + k4 solved
    for Y_HDR.  100 % SDR (100 cd/m²) maps to ≈ 333 cd/m², 118 cd/m² back to ≈ 1000 cd/m².
    """
    y_ip = y_sdr_ip / k1
    y = y_sdr.clamp(min=0.0)
    return torch.where(y < y_sdr_ip, y / k1, y_ip * (torch.exp((y - k4) / k2) + k3))


def _expansion_peak_ratio(s_k: float, beta: float) -> float:
    """(value at s = 1) / W of the expansion curve: s_k + β·(exp((1 − s_k)/β) − 1)."""
    try:
        return s_k + beta * math.expm1((1.0 - s_k) / beta)
    except OverflowError:
        return math.inf


@lru_cache(maxsize=64)
def sdr_expansion_parameters(sdr_white: float, peak: float, knee: float) -> tuple[float, float]:
    """(s_k, β) of :func:`sdr_expansion_curve` for an SDR reference white, a peak and a knee.

    ``knee`` is the SDR signal level (BT.1886, 0–1) where expansion starts; s_k = knee^2.4 is the
    same point in relative SDR luminance.  β > 0 solves W·(s_k + β·(exp((1 − s_k)/β) − 1)) = peak
    (the left side falls monotonically from ∞ to W as β grows), found by bisection on log β.
    β = ∞ (no expansion, a straight line) when peak ≤ sdr_white.
    """
    if not 0.0 < knee < 1.0:
        raise ValueError("knee must be in (0, 1)")
    if sdr_white <= 0 or peak <= 0:
        raise ValueError("sdr_white and peak must be positive")
    s_k = knee**2.4
    target = peak / sdr_white
    if target <= 1.0 + 1e-9:
        return s_k, math.inf
    lo, hi = 1e-6, 1e6  # log-bisection: ratio(lo) > target > ratio(hi)
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if _expansion_peak_ratio(s_k, mid) > target:
            lo = mid
        else:
            hi = mid
    return s_k, math.sqrt(lo * hi)


def sdr_expansion_curve(
    s: Tensor, sdr_white: float = SDR_REFERENCE_WHITE_NITS, peak: float = 1000.0, knee: float = 0.8
) -> Tensor:
    """Expansion curve: relative SDR luminance s (1 = 100 % SDR) → HDR luminance in cd/m².

    L = W·s for s ≤ s_k (the BT.2408 display-light mapping, SDR white at W = ``sdr_white``), and
    L = W·(s_k + β·(exp((s − s_k)/β) − 1)) above, continuous in value and slope at the knee
    s_k = knee^2.4 and reaching ``peak`` at s = 1 (:func:`sdr_expansion_parameters`).  This is the
    Report ITU-R BT.2446-1 §6.1.4 Method C curve solved for HDR (:func:`bt2446c_inverse_curve`)
    with W = 100/k1, s_k = Y_SDR,ip/100 and β = k2/100.  Inputs are clamped to [0, 1].
    """
    s_k, beta = sdr_expansion_parameters(float(sdr_white), float(peak), float(knee))
    s = s.clamp(0.0, 1.0)
    if math.isinf(beta):
        return sdr_white * s
    return torch.where(s <= s_k, sdr_white * s, sdr_white * (s_k + beta * torch.expm1((s - s_k) / beta)))


def hdr_expand_sdr_to_pq(
    rgb709: Tensor,
    sdr_white: float = SDR_REFERENCE_WHITE_NITS,
    peak: float = 1000.0,
    knee: float = 0.8,
    saturation: float = 0.0,
) -> Tensor:
    """SDR BT.709 R'G'B' → PQ BT.2020 R'G'B' with highlights expanded to ``peak`` cd/m².

    1. Display light as in BT.2408-7 §5.1.1: BT.1886 EOTF (γ 2.4, black 0) with 100 % SDR at
       ``sdr_white`` cd/m², BT.709 → BT.2020 (BT.2087).
    2. Luminance Y (BT.2020 weights, RP 177) goes through :func:`sdr_expansion_curve` as
       s = Y/W; R, G, B are scaled by the same ratio, so chromaticity (hence hue and saturation)
       is kept, as in BT.2446-1 §6.1.3–6.1.5.  Below the knee the result is the BT.2408 mapping.
    3. Saturation compensation: above the knee the chroma (R, G, B − Y) is scaled by
       1 + ``saturation``·g, with g = (s − s_k)/(1 − s_k) rising from 0 at the knee to 1 at SDR
       white; a colour is moved along its line through white (same dominant wavelength).
       Negative components are clipped to 0.
    4. max(R, G, B) ≤ max(``peak``, ``sdr_white``): for a convex curve f with f(0) = 0,
       max(R,G,B)·f(s)/(W·s) ≤ f(1) already (BT.709 colours in BT.2020 have components ≤ W·s
       ratio-wise); only a saturation boost can exceed it, and such a pixel is scaled down.
       With ``peak`` ≤ ``sdr_white`` there is no expansion: the result is the BT.2408 mapping.
    5. ST 2084 inverse EOTF.
    """
    limit = max(float(peak), float(sdr_white))
    linear = bt709_to_bt2020(bt1886_eotf(rgb709.clamp(0.0, 1.0), l_w=sdr_white)).clamp_(min=0.0)
    y = luminance(linear)
    s = y / sdr_white
    y_out = sdr_expansion_curve(s, sdr_white, peak, knee)
    ratio = torch.where(y > 0, y_out / y.clamp(min=1e-12), torch.ones_like(y))
    out = linear * ratio
    if saturation:
        s_k, _ = sdr_expansion_parameters(float(sdr_white), float(peak), float(knee))
        gain = 1.0 + saturation * ((s - s_k) / (1.0 - s_k)).clamp(0.0, 1.0)
        out = (y_out + (out - y_out) * gain).clamp_(min=0.0)
        m = out.amax(dim=-3, keepdim=True)
        out = out * torch.where(m > limit, limit / m.clamp(min=1e-12), torch.ones_like(m))
    return pq_encode(out.clamp_(max=limit))


# ---- Peak limit that survives 4:2:0 ----

__all__ += ["limit_peak_after_420"]


def limit_peak_after_420(rgb_pq: Tensor, peak_nits: float, siting: str = "left") -> Tensor:
    """Lower R', G', B' equally where the 4:2:0 round trip would push max(R,G,B) above ``peak_nits``.

    Decimating chroma (:func:`chroma_downsample`, as the pack step does) and interpolating it
    back (:func:`chroma_upsample`, as a decoder and the light meter do) gives a pixel next to a
    saturated edge its neighbours' chroma, and R'G'B' rebuilt from it can exceed the 4:4:4
    pixel's own maximum by far (CTA-861.3 MaxCLL measures the decoded signal). That rebuilt
    signal is R'G'B' + M·(C_rec − C), ITU-R BT.2020 non-constant-luminance Y'CbCr; subtracting
    the excess e = max(R',G',B')_rec − PQ(peak) from R', G' and B' alike lowers Y' by e and
    leaves Cb, Cr (hence C_rec) unchanged, so the rebuilt maximum lands on the peak exactly
    (before rounding). Pixels without excess are returned unchanged. H and W must be even.
    """
    limit = float(pq_encode(torch.tensor(float(peak_nits), dtype=torch.float64)))
    ycc = rgb_to_ycbcr(rgb_pq, "bt2020")
    h, w = rgb_pq.shape[-2:]
    chroma = chroma_upsample(chroma_downsample(ycc[:, 1:], siting), h, w, siting)
    rebuilt = ycbcr_to_rgb(torch.cat([ycc[:, :1], chroma], dim=1), "bt2020")
    excess = (rebuilt.amax(dim=-3, keepdim=True) - limit).clamp_(min=0.0)
    if not bool((excess > 0).any()):
        return rgb_pq
    return rgb_pq - excess


# ---- Luma adjustment for 4:2:0 PQ (ITU-T H.Sup15 §6.3.2; Ström et al. 2016) ----

__all__ += ["luma_adjust", "pq_eotf_lut", "LUMA_ADJUST_TOLERANCE"]


def luma_adjust(
    y: Tensor,
    cb: Tensor,
    cr: Tensor,
    rgb_pq: Tensor,
    matrix: str = "bt2020",
    bit_depth: int = 10,
    full_range: bool = False,
    siting: str = "left",
) -> Tensor:
    """Y' codes of 4:2:0 planes re-chosen so each pixel's decoded luminance is its own.

    Non-constant-luminance Y'CbCr carries luminance partly in Cb, Cr; 4:2:0 gives a pixel its
    neighbours' chroma, and with PQ a saturated edge then gains or loses a large part of its
    light (bright or dark fringes). Luma adjustment (ITU-T H.Sup15 §6.3.2; J. Ström et al.,
    "Luma Adjustment for High Dynamic Range Video", DCC 2016) picks, for each pixel, the Y'
    code whose R'G'B' rebuilt with the decoder's chroma (:func:`chroma_upsample` of ``cb``,
    ``cr``, as the light meter rebuilds it) has the linear luminance (:func:`luminance` of the
    primaries named like ``matrix``) of the 4:4:4 pixel ``rgb_pq``.

    Pixels whose rebuilt luminance is already within :data:`LUMA_ADJUST_TOLERANCE` of the
    target (ST 2084 EOTF from :func:`pq_eotf_upper_lut`) keep ``y``: flat areas keep the plain
    rounding. The others are re-solved by a bisection over the integer codes (luminance
    increases with Y'), with the EOTF from :func:`pq_eotf_lut`. Returns the new ``y`` (same
    dtype; ``y`` is not modified).
    """
    ys, yo, _, _ = _quant_params(bit_depth, full_range)
    n, height, width = y.shape
    lo_code, hi_code = (0, 2**bit_depth - 1) if full_range else (int(round(yo)), int(round(yo + ys)))
    w = _rgb_to_xyz_f64(matrix)[1]  # luminance row of the matrix's primaries (RP 177), as luminance()

    def light(rgb: Tensor, eotf: TransferLut) -> Tensor:  # R'G'B' in [0,1] (channels at -3 or -1) → cd/m²
        dim = -3 if rgb.dim() == 4 else -1
        r, g, b = (eotf(c) for c in rgb.unbind(dim))
        return r.mul_(w[0]).add_(g, alpha=w[1]).add_(b, alpha=w[2])

    # which pixels miss: one gather per channel (the upper-end table, < 0.02 % high at 100 cd/m²)
    coarse = pq_eotf_upper_lut(y.device)
    terms = _chroma_terms(cb, cr, matrix, bit_depth, full_range, siting, height, width, torch.float32)
    miss = torch.empty((n, height, width), dtype=torch.bool, device=y.device)
    rows = max(1, STRIP_PIXELS // max(width, 1)) if y.device.type == "cpu" else height
    for r0 in range(0, height, rows):  # on a CPU in strips of rows that stay in cache
        r1 = min(height, r0 + rows)
        target = light(rgb_pq[..., r0:r1, :].to(torch.float32).clamp(0.0, 1.0), coarse)
        rebuilt = terms[..., r0:r1, :].add(((y[:, r0:r1].to(torch.float32) - yo) / ys).unsqueeze(1)).clamp_(0.0, 1.0)
        off = light(rebuilt, coarse).sub_(target).abs_().div_(target.clamp_(min=LUMA_ADJUST_FLOOR_NITS))
        torch.gt(off, LUMA_ADJUST_TOLERANCE, out=miss[:, r0:r1])
    idx = torch.nonzero(miss.view(-1)).view(-1)
    out = y.clone()
    if idx.numel() == 0:
        return out
    # those pixels, solved with the interpolated table
    eotf = pq_eotf_lut(y.device)
    t = terms.permute(0, 2, 3, 1).reshape(-1, 3)[idx]
    goal = light(rgb_pq.permute(0, 2, 3, 1).reshape(-1, 3)[idx].to(torch.float32).clamp(0.0, 1.0), eotf)

    def light_at(code: Tensor) -> Tensor:
        return light((t + ((code.to(torch.float32) - yo) / ys).unsqueeze(1)).clamp_(0.0, 1.0), eotf)

    # bisection for the largest code whose luminance is ≤ the goal, in a bracket of ±2^(n-5)
    # codes around the plain rounding (adjustments measured up to 31 codes at 10 bits),
    # widened to the whole code range where the goal lies outside it
    y0 = y.view(-1)[idx].to(torch.int32)
    reach = 2 ** (bit_depth - 5)
    lo = (y0 - reach).clamp_(lo_code, hi_code)
    hi = (y0 + reach).clamp_(lo_code, hi_code)
    lo = torch.where(light_at(lo) > goal, torch.full_like(lo, lo_code), lo)
    hi = torch.where(light_at(hi) < goal, torch.full_like(hi, hi_code), hi)
    while bool((hi - lo > 1).any()):
        mid = (lo + hi) // 2
        below = light_at(mid) <= goal
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    pick = torch.where((light_at(hi) - goal).abs() < (goal - light_at(lo)).abs(), hi, lo)
    out.view(-1)[idx] = pick.to(out.dtype)
    return out


#: a pixel's Y' is re-solved when its rebuilt luminance is more than this far (relative) off:
#: about one 10-bit PQ code at mid-tones, so plain rounding is not chased
LUMA_ADJUST_TOLERANCE = 0.01
#: the relative error is taken against at least this luminance (cd/m²), so that near black,
#: where one code is many per cent, rounding is not chased
LUMA_ADJUST_FLOOR_NITS = 0.5
