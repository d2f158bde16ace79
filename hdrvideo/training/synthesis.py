"""Synthetic SDR/HDR10 training pairs from real scene-linear HDR photographs.

Recipe (one crop of one panorama → one HDR10 target and several SDR renditions)
-------------------------------------------------------------------------------
HDR side (:func:`hdr10_grade`):

1. **Exposure normalisation** — the crop's log-average luminance (BT.709 weights) is set to a
   "key" in cd/m² drawn log-uniformly from a narrow range (default 18–32 cd/m², so diffuse
   white lands near the BT.2408 HDR Reference White of 203 cd/m²).
2. **Primaries** — linear BT.709 → BT.2020 (BT.2087).
3. **Highlight roll-off** — the BT.2390 EETF on max(R,G,B) from the crop's own peak (at most
   10 000 cd/m²) to the 1000 cd/m² mastering peak (:func:`hdrvideo.colour.bt2390_tone_map`).
4. **PQ** — ST 2084 inverse EOTF, stored as 16-bit codes (as an HDR10 16-bit PNG would be).

SDR side (:func:`sdr_rendition`), from the *graded* HDR (display light), a randomly drawn
standard down-conversion per sample:

* ``bt2446a`` — Report ITU-R BT.2446-1 Method A (§4.1) as specified;
* ``bt2446c`` — BT.2446-1 Method C (§6.1), crosstalk α ∈ [0, 0.33];
* ``bt2390`` — BT.2390 EETF roll-off to an SDR display peak of 100–203 cd/m² (max(R,G,B) or
  per-component);
* ``filmic`` — Hable's filmic curve, exposure 1.5–3 (203 cd/m² → 1.5–3 on its input scale).

(ranges in :data:`SDR_PARAM_RANGES`).  The curves disagree strongly — SDR code 180 means
≈ 50 cd/m² after Method C but ≈ 180 cd/m² after Method A — so a network can only invert them
well by recognising the rendition from image-level statistics; with a narrow exposure key the
SDR's overall level carries that information (a per-pixel curve conditioned only on the SDR
mean luma already beats BT.2408 by several dB on held-out scenes).

then, as in camera-pipeline reversal: gamut clip to BT.709, BT.1886 inverse EOTF, 8-bit
quantisation.  Low-resolution inputs for SR are :func:`bicubic_downscale` of the 8-bit SDR
(antialiased bicubic, a = −0.5, as MATLAB ``imresize``), re-quantised to 8 bits.  Optionally
each rendition goes through an H.264 round trip (:func:`h264_round_trip`: BT.709 limited-range
Y'CbCr 4:2:0, libx264 at a random CRF) to add compression artefacts.

Crops come from the horizon band of the equirectangular panoramas (no resampling, so the HR
target is as sharp as the source).  Train/test are split **by scene**.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import colour
from .imageio import read_rgbe

__all__ = [
    "DEFAULT_TEST_SCENES",
    "SDR_METHODS",
    "SynthConfig",
    "list_scenes",
    "split_scenes",
    "load_panorama",
    "band_crop",
    "hdr10_grade",
    "draw_sdr_recipe",
    "sdr_rendition",
    "quantize",
    "bicubic_downscale",
    "h264_round_trip",
    "build_synthetic_set",
    "standard_test_config",
    "export_png",
]

#: Held-out scenes (one or two of each kind: outdoor, sunset, night, indoor, studio, chapel).
DEFAULT_TEST_SCENES: tuple[str, ...] = (
    "hilly_terrain_01",
    "venice_sunset",
    "st_peters_square_night",
    "leadenhall_market",
    "brown_photostudio_02",
    "thatch_chapel",
)

SDR_METHODS: tuple[str, ...] = ("bt2446a", "bt2446c", "bt2390", "filmic")

MASTERING_PEAK = 1000.0


# --------------------------------------------------------------------------------------
# Scenes and crops
# --------------------------------------------------------------------------------------


def scene_name(path: str | Path) -> str:
    """``noon_grass_1k.hdr`` → ``noon_grass``."""
    stem = Path(path).stem
    for suffix in ("_1k", "_2k", "_4k", "_8k"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def list_scenes(photos_dir: str | Path) -> dict[str, Path]:
    """Scene name → path of every ``*.hdr`` in ``photos_dir`` (sorted by name)."""
    d = Path(photos_dir)
    files = sorted(d.glob("*.hdr"))
    if not files:
        raise FileNotFoundError(f"no .hdr files in {d}")
    return {scene_name(p): p for p in files}


def split_scenes(
    scenes: Sequence[str], test_scenes: Sequence[str] | None = None, n_test: int = 6
) -> tuple[list[str], list[str]]:
    """(train, test) scene names; a scene is never in both.

    ``test_scenes`` defaults to :data:`DEFAULT_TEST_SCENES` (those present); when none of them
    is present, the ``n_test`` scenes with the smallest CRC32 of their name are held out.
    """
    scenes = sorted(scenes)
    wanted = DEFAULT_TEST_SCENES if test_scenes is None else tuple(test_scenes)
    test = [s for s in scenes if s in wanted]
    if not test:
        test = sorted(scenes, key=lambda s: zlib.crc32(s.encode()))[: min(n_test, max(len(scenes) - 1, 0))]
    train = [s for s in scenes if s not in test]
    return train, sorted(test)


def load_panorama(path: str | Path) -> Tensor:
    """Scene-linear RGB (3,H,W) float32 from a Radiance ``.hdr`` (BT.709/sRGB primaries)."""
    arr = read_rgbe(path)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def band_crop(pano: Tensor, top: int, left: int, height: int, width: int) -> Tensor:
    """Crop with horizontal wrap-around (an equirectangular panorama is periodic in x)."""
    w = pano.shape[-1]
    cols = (torch.arange(left, left + width) % w).tolist()
    return pano[..., top : top + height, :][..., cols]


def band_rows(pano_height: int, crop_height: int, max_latitude: float = 55.0) -> tuple[int, int]:
    """Range [lo, hi] of valid crop tops so the crop stays within ±max_latitude."""
    half = pano_height / 2
    lat_rows = int(half * max_latitude / 90.0)
    lo = int(half - lat_rows)
    hi = int(half + lat_rows) - crop_height
    if hi < lo:  # crop taller than the band: centre it
        lo = hi = max(0, int(half - crop_height / 2))
    return lo, hi


# --------------------------------------------------------------------------------------
# HDR10 grade
# --------------------------------------------------------------------------------------


def log_average_luminance(rgb709_linear: Tensor, floor_fraction: float = 1e-3) -> float:
    """exp(mean(log Y)) with Y floored at ``floor_fraction`` × median (robust to black pixels)."""
    y = colour.luminance(rgb709_linear.double(), "bt709").flatten()
    med = float(y.median())
    floor = max(med * floor_fraction, 1e-9)
    return float(torch.exp(torch.log(y.clamp(min=floor)).mean()))


def hdr10_grade(rgb709_linear: Tensor, key_nits: float = 25.0, peak: float = MASTERING_PEAK) -> Tensor:
    """Scene-linear BT.709 crop → graded linear BT.2020 display light in cd/m² (≤ ``peak``).

    Exposure so the log-average luminance is ``key_nits``; BT.709 → BT.2020 (BT.2087);
    BT.2390 EETF roll-off on max(R,G,B) from the crop's peak (≤ 10 000) to ``peak``.
    """
    x = rgb709_linear.double().clamp(min=0.0)
    la = log_average_luminance(x)
    nits = x * (key_nits / max(la, 1e-12))
    nits2020 = colour.bt709_to_bt2020(nits).clamp(min=0.0)
    src_peak = float(nits2020.amax().clamp(min=peak, max=colour.PQ_MAX_NITS))
    return colour.bt2390_tone_map(nits2020, source_peak=src_peak, target_peak=peak, mode="maxrgb").clamp(
        0.0, peak
    )


def quantize(x: Tensor, bits: int) -> Tensor:
    """[0,1] float → integer codes (uint8 for 8 bits, int32 otherwise), full range."""
    top = 2**bits - 1
    q = torch.round(x.clamp(0.0, 1.0) * top)
    return q.to(torch.uint8) if bits <= 8 else q.to(torch.int32)


# --------------------------------------------------------------------------------------
# SDR renditions
# --------------------------------------------------------------------------------------


@dataclass
class SdrRecipe:
    """One randomly drawn HDR→SDR down-conversion."""

    method: str
    params: dict = field(default_factory=dict)


#: Parameter ranges of the SDR down-conversions (uniform; filmic exposure log-uniform).
SDR_PARAM_RANGES: dict[str, tuple[float, float]] = {
    "bt2446a_gain": (1.0, 1.0),  # linear gain after Method A (1 = the Report's curve as is)
    "bt2446c_alpha": (0.0, 0.33),  # crosstalk α, the Report's range
    "bt2390_peak": (100.0, 203.0),  # SDR display peak, cd/m²
    "filmic_exposure": (1.5, 3.0),  # 203 cd/m² × exposure = 1.0 on the curve's input
}


def draw_sdr_recipe(
    rng: np.random.Generator, method: str | None = None, ranges: dict[str, Sequence[float]] | None = None
) -> SdrRecipe:
    """Draw a down-conversion (uniform over :data:`SDR_METHODS` unless ``method`` is given)."""
    r = {**SDR_PARAM_RANGES, **(ranges or {})}
    m = method or str(rng.choice(SDR_METHODS))
    if m == "bt2446a":
        return SdrRecipe(m, {"gain": float(rng.uniform(*r["bt2446a_gain"]))})
    if m == "bt2446c":
        return SdrRecipe(m, {"alpha": float(rng.uniform(*r["bt2446c_alpha"]))})
    if m == "bt2390":
        return SdrRecipe(
            m, {"sdr_peak": float(rng.uniform(*r["bt2390_peak"])), "mode": str(rng.choice(["maxrgb", "rgb"]))}
        )
    if m == "filmic":
        lo, hi = r["filmic_exposure"]
        return SdrRecipe(m, {"exposure": float(math.exp(rng.uniform(math.log(lo), math.log(hi))))})
    raise ValueError(f"unknown SDR method {m!r}")


def sdr_rendition(hdr2020_nits: Tensor, recipe: SdrRecipe) -> Tensor:
    """Graded HDR (linear BT.2020 cd/m²) → SDR BT.709 R'G'B' float in [0,1] (not quantised).

    The down-conversion gives linear SDR display light (1.0 = SDR peak); then gamut clip to
    BT.709 and the BT.1886 inverse EOTF (:func:`hdrvideo.colour.sdr_bt709_signal`).
    """
    x = hdr2020_nits.double()
    p = recipe.params
    if recipe.method == "bt2446a":
        sig2020 = colour.bt2446a_tone_map(x, l_hdr=MASTERING_PEAK, l_sdr=100.0)
        rel = colour.bt1886_eotf(sig2020.clamp(min=0.0), l_w=1.0) * p.get("gain", 1.0)
    elif recipe.method == "bt2446c":
        rel = colour.bt2446c_tone_map(x, alpha=p.get("alpha", 0.15)) / 100.0
    elif recipe.method == "bt2390":
        peak = p.get("sdr_peak", 100.0)
        rel = colour.bt2390_tone_map(x, MASTERING_PEAK, peak, mode=p.get("mode", "maxrgb")) / peak
    elif recipe.method == "filmic":
        rel = colour.filmic_tone_map(x, exposure=p.get("exposure", 2.0))
    else:
        raise ValueError(f"unknown SDR method {recipe.method!r}")
    return colour.sdr_bt709_signal(rel).to(hdr2020_nits.dtype if hdr2020_nits.is_floating_point() else torch.float32)


def bicubic_downscale(x: Tensor, factor: int) -> Tensor:
    """The documented SR degradation: antialiased bicubic downscale by an integer ``factor``.

    ``torch.nn.functional.interpolate(mode="bicubic", antialias=True)`` — Keys cubic with
    a = −0.5 whose support is widened by the factor, the same kernel as MATLAB ``imresize``
    (used by HDRTV1K/SR-ITM data).  Input (N,3,H,W) or (3,H,W) float, H and W divisible by
    ``factor``; output clamped to [0,1].  Quantise to 8 bits afterwards to match an 8-bit file.
    """
    if factor == 1:
        return x
    squeeze = x.dim() == 3
    xb = x[None] if squeeze else x
    h, w = xb.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"size {w}×{h} is not divisible by {factor}")
    y = F.interpolate(xb.float(), size=(h // factor, w // factor), mode="bicubic", antialias=True, align_corners=False)
    y = y.clamp(0.0, 1.0).to(x.dtype)
    return y[0] if squeeze else y


def h264_round_trip(frames: Tensor, crf: int, preset: str = "veryfast") -> Tensor:
    """Encode (N,3,H,W) BT.709 R'G'B' [0,1] frames as a tiny H.264 clip and decode it.

    R'G'B' → BT.709 Y'CbCr, 8-bit limited range, 4:2:0 (left-sited chroma, as H.264 assumes)
    → libx264 (``crf``, ``preset``) → decode → back to R'G'B' with the inverse steps.
    H and W must be even.  Returns float R'G'B' in [0,1] of the same shape.
    """
    import av

    n, _, h, w = frames.shape
    if h % 2 or w % 2:
        raise ValueError("H.264 round trip needs even frame sizes")
    x = frames.double().clamp(0.0, 1.0)
    codes = colour.quantize_ycbcr(colour.rgb_to_ycbcr(x, "bt709"), 8, full_range=False)
    y_plane = codes[:, 0]
    chroma = colour.chroma_downsample(codes[:, 1:].double(), "left").round().clamp(0, 255).to(torch.int32)
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base = __import__("fractions").Fraction(1, 25)
    enc.framerate = 25
    enc.options = {"crf": str(int(crf)), "preset": preset, "threads": "1"}
    packets = []
    for i in range(n):
        planes = np.concatenate(
            [
                y_plane[i].numpy().astype(np.uint8),
                chroma[i, 0].numpy().astype(np.uint8).reshape(h // 4, w),
                chroma[i, 1].numpy().astype(np.uint8).reshape(h // 4, w),
            ]
        )
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts = i
        packets.extend(enc.encode(frame))
    packets.extend(enc.encode(None))
    dec = av.CodecContext.create("h264", "r")
    dec.options = {"threads": "1"}
    decoded = []
    for p in packets:
        decoded.extend(dec.decode(p))
    decoded.extend(dec.decode(None))
    if len(decoded) != n:
        raise RuntimeError(f"H.264 round trip returned {len(decoded)} of {n} frames")
    out = []
    for fr in decoded:
        arr = fr.to_ndarray(format="yuv420p")
        yq = torch.from_numpy(arr[:h].astype(np.int32))
        cb = torch.from_numpy(arr[h : h + h // 4].reshape(h // 2, w // 2).astype(np.int32))
        cr = torch.from_numpy(arr[h + h // 4 :].reshape(h // 2, w // 2).astype(np.int32))
        yf, cbf, crf_ = colour.dequantize_ycbcr(yq, cb, cr, 8, False, dtype=torch.float64)
        c = colour.chroma_upsample(torch.stack((cbf, crf_))[None], h, w, "left")[0]
        out.append(colour.ycbcr_to_rgb(torch.cat((yf[None], c)), "bt709"))
    return torch.stack(out).clamp(0.0, 1.0).to(frames.dtype if frames.is_floating_point() else torch.float32)


# --------------------------------------------------------------------------------------
# Building a cached set
# --------------------------------------------------------------------------------------


@dataclass
class SynthConfig:
    """Parameters of :func:`build_synthetic_set` (stored with the cache as ``meta.json``)."""

    split: str = "train"
    views_per_scene: int = 48
    height: int = 192
    width: int = 192
    variants: int = 2
    scales: tuple[int, ...] = (1, 2, 4)
    key_nits: tuple[float, float] = (18.0, 32.0)
    max_latitude: float = 55.0
    h264_prob: float = 0.5
    crf: tuple[int, int] = (18, 32)
    clip_len: int = 8
    seed: int = 0
    test_scenes: tuple[str, ...] | None = None
    #: cycle the SDR methods over views (deterministic, balanced) instead of drawing them
    balanced_methods: bool = False
    sdr_ranges: dict = field(default_factory=lambda: dict(SDR_PARAM_RANGES))
    version: int = 2


def _views_for_scene(pano: Tensor, cfg: SynthConfig, rng: np.random.Generator) -> list[dict]:
    ph, pw = pano.shape[-2:]
    lo, hi = band_rows(ph, cfg.height, cfg.max_latitude)
    views = []
    if cfg.split == "train":
        for _ in range(cfg.views_per_scene):
            views.append({"top": int(rng.integers(lo, hi + 1)), "left": int(rng.integers(0, pw))})
    else:  # evenly spaced around the horizon, centred vertically with a small jitter
        offset = int(rng.integers(0, pw))
        centre = (ph - cfg.height) // 2
        for i in range(cfg.views_per_scene):
            top = int(np.clip(centre + rng.integers(-ph // 16, ph // 16 + 1), lo, hi))
            views.append({"top": top, "left": (offset + i * pw // cfg.views_per_scene) % pw})
    return views


def build_synthetic_set(
    photos_dir: str | Path,
    out_dir: str | Path,
    cfg: SynthConfig | None = None,
    progress=None,
) -> Path:
    """Build (or reuse) a cached synthetic set in ``out_dir``; returns ``out_dir``.

    Files: ``hdr.npy`` uint16 (N,3,H,W) PQ BT.2020 codes; ``sdr_x{s}.npy`` uint8
    (N,K,3,H/s,W/s) BT.709 R'G'B' for each scale s and K variants; ``meta.json`` with the
    config, the scene of every view, its crop, and each variant's recipe and CRF.  A cache whose
    ``meta.json`` config equals ``cfg`` is reused as is.
    """
    cfg = cfg or SynthConfig()
    out = Path(out_dir)
    meta_path = out / "meta.json"
    cfg_dict = json.loads(json.dumps(asdict(cfg)))
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("config") == cfg_dict and all((out / f"sdr_x{s}.npy").exists() for s in cfg.scales):
            return out
    out.mkdir(parents=True, exist_ok=True)
    scenes = list_scenes(photos_dir)
    train, test = split_scenes(list(scenes), cfg.test_scenes)
    chosen = train if cfg.split == "train" else test
    rng = np.random.default_rng([cfg.seed, 0 if cfg.split == "train" else 1])

    hdr_list, view_meta, sdr_hr = [], [], []  # sdr_hr: list over views of list over variants
    for si, name in enumerate(chosen):
        pano = load_panorama(scenes[name])
        for v in _views_for_scene(pano, cfg, rng):
            crop = band_crop(pano, v["top"], v["left"], cfg.height, cfg.width)
            key = float(math.exp(rng.uniform(math.log(cfg.key_nits[0]), math.log(cfg.key_nits[1]))))
            graded = hdr10_grade(crop, key_nits=key)
            hdr_list.append(quantize(colour.pq_encode(graded), 16).to(torch.int32).numpy().astype(np.uint16))
            recipes, sdrs = [], []
            for k in range(cfg.variants):
                method = None
                if cfg.balanced_methods:
                    method = SDR_METHODS[(len(view_meta) + k) % len(SDR_METHODS)]
                r = draw_sdr_recipe(rng, method, cfg.sdr_ranges)
                recipes.append(asdict(r))
                sdrs.append(quantize(sdr_rendition(graded, r).float(), 8))
            sdr_hr.append(sdrs)
            view_meta.append({"scene": name, **v, "key_nits": key, "variants": recipes})
        if progress:
            progress(si + 1, len(chosen), name)

    n = len(view_meta)
    np.save(out / "hdr.npy", np.stack(hdr_list))
    for s in cfg.scales:
        arr = np.zeros((n, cfg.variants, 3, cfg.height // s, cfg.width // s), np.uint8)
        crfs = np.full((n, cfg.variants), -1, np.int32)
        for k in range(cfg.variants):
            imgs = torch.stack([sdr_hr[i][k] for i in range(n)]).float() / 255.0
            if s > 1:
                imgs = quantize(bicubic_downscale(imgs, s), 8).float() / 255.0
            # H.264 round trips on short clips of random views (one CRF per clip)
            order = rng.permutation(n)
            for c0 in range(0, n, cfg.clip_len):
                idx = order[c0 : c0 + cfg.clip_len]
                if rng.random() < cfg.h264_prob:
                    crf = int(rng.integers(cfg.crf[0], cfg.crf[1] + 1))
                    imgs[idx] = h264_round_trip(imgs[idx], crf)
                    crfs[idx, k] = crf
            arr[:, k] = quantize(imgs, 8).numpy()
        np.save(out / f"sdr_x{s}.npy", arr)
        for i in range(n):
            view_meta[i].setdefault("crf", {})[f"x{s}"] = crfs[i].tolist()
    meta = {"config": cfg_dict, "scenes": chosen, "held_out": test if cfg.split == "train" else train, "views": view_meta}
    meta_path.write_text(json.dumps(meta, indent=1))
    return out


def standard_test_config(seed: int = 0) -> SynthConfig:
    """The held-out evaluation set used for the shipped weights' metrics.

    12 crops of 256×192 per held-out scene, spaced evenly around the horizon; one SDR rendition
    per crop with the four down-conversions cycled over the crops; H.264 on about half.
    """
    return SynthConfig(
        split="test", views_per_scene=12, height=192, width=256, variants=1, seed=seed, balanced_methods=True
    )


def export_png(cache_dir: str | Path, out_dir: str | Path, split: str | None = None) -> Path:
    """Write a synthetic cache as PNG folders in the HDRTV1K layout (variant 0 of each view).

    ``{split}_hdr/NAME.png`` (16-bit PQ BT.2020 R'G'B'), ``{split}_sdr/NAME.png`` (8-bit BT.709)
    and ``{split}_sdr_x{s}/NAME.png`` for each SR scale in the cache; ``split`` defaults to the
    cache's own.  Returns ``out_dir``.
    """
    from .imageio import write_png

    src, out = Path(cache_dir), Path(out_dir)
    meta = json.loads((src / "meta.json").read_text())
    split = split or meta["config"]["split"]
    hdr = np.load(src / "hdr.npy", mmap_mode="r")
    names = [f"{v['scene']}_{i:04d}" for i, v in enumerate(meta["views"])]
    d = out / f"{split}_hdr"
    d.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        write_png(d / f"{n}.png", np.ascontiguousarray(hdr[i].transpose(1, 2, 0)))
    for s in meta["config"]["scales"]:
        sdr = np.load(src / f"sdr_x{s}.npy", mmap_mode="r")
        d = out / (f"{split}_sdr" if s == 1 else f"{split}_sdr_x{s}")
        d.mkdir(parents=True, exist_ok=True)
        for i, n in enumerate(names):
            write_png(d / f"{n}.png", np.ascontiguousarray(sdr[i, 0].transpose(1, 2, 0)))
    (out / "SYNTHESIS.json").write_text(json.dumps({"config": meta["config"], "scenes": meta["scenes"]}, indent=1))
    return out
