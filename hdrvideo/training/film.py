"""What films contain, for training and for testing: fades, black, bars, grain, pans and cuts.

Two halves that use the same vocabulary:

* :func:`film_augment` — training-time augmentation of an (SDR, HDR10) pair so a network learns
  what still crops never show it: a **fade** (the SDR signal scaled by α, the HDR target's
  display light by α^2.4, which is what the SDR display light does under BT.1886, so brightness
  follows the picture), **black** frames (black in, black out), **letterbox/pillarbox bars**
  (black in the bars of both), and **grain** (noise on the SDR input only; the target stays
  clean, so the network does not amplify it).
* :func:`film_clips` and :func:`measure_clip` — short synthetic clips of the situations that
  break video models (fade to black, hard cut, pan across a bright sky, letterbox, black, grain
  on a static shot) and the temporal measurements taken on a processor's output: mean luminance
  per frame, its log–log slope against the input's, reversals and jumps, motion-compensated
  flicker in PU21 units, black level and border. ``hdrvideo filmtest`` prints them per preset
  next to ``bt2408`` (a per-pixel static mapping, so it adds no flicker: the reference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from .. import colour

__all__ = ["FilmAugment", "film_augment", "Clip", "film_clips", "ClipResult", "measure_clip", "BARS"]


# --------------------------------------------------------------------------------------
# Training augmentation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FilmAugment:
    """Probabilities and ranges of :func:`film_augment` (one draw per training sample)."""

    fade: float = 0.40  # scale the SDR signal by α ∈ [fade_min, 1] (log-uniform)
    fade_min: float = 0.01
    black: float = 0.05  # an all-black frame
    bars: float = 0.15  # letterbox or pillarbox bars of 1/16–1/4 of the frame
    grain: float = 0.50  # Gaussian grain of σ ∈ grain_sigma 8-bit codes on the SDR only
    grain_sigma: tuple[float, float] = (1.0, 4.0)
    #: the image statistics come from the same picture at another exposure (what temporally
    #: smoothed statistics are during a fade): the output must follow the input, not them
    context_mismatch: float = 0.5
    #: weight of the grain-stability loss: the outputs for two grain draws on the same picture
    #: must agree (static grain must not flicker more than the classical mapping's)
    stability: float = 0.0

    @property
    def active(self) -> bool:
        return any(p > 0 for p in (self.fade, self.black, self.bars, self.grain, self.context_mismatch))


def _quantize8(x: Tensor) -> Tensor:
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0


def film_augment(sdr: Tensor, hdr: Tensor, scale: int, rng: np.random.Generator,
                 cfg: FilmAugment = FilmAugment()) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Augment one pair: ``sdr`` (3,h,w) BT.709 R'G'B' in [0,1] (8-bit values), ``hdr``
    (3,s·h,s·w) PQ BT.2020 R'G'B' in [0,1]. Returns (input, target, context input, second
    input): the network is to be run on the input with the image statistics of the context
    input, which is the input itself or (``context_mismatch``) the same picture at another
    exposure, without grain; the second input is the input with another draw of its grain (the
    input itself when it has none), for the stability loss. A pure function of ``rng``."""
    sdr, hdr = sdr.float(), hdr.float()
    h, w = sdr.shape[-2:]
    clean = sdr
    if rng.random() < cfg.context_mismatch:
        beta = math.exp(rng.uniform(math.log(cfg.fade_min), 0.0))
        ctx = _quantize8(clean * beta)
    else:
        ctx = None
    if rng.random() < cfg.black:
        sdr, hdr = torch.zeros_like(sdr), torch.zeros_like(hdr)
    elif rng.random() < cfg.fade:
        alpha = math.exp(rng.uniform(math.log(cfg.fade_min), 0.0))
        sdr = _quantize8(sdr * alpha)
        # BT.1886 (γ 2.4, black 0): display light scales by α^2.4; the target follows it
        hdr = colour.pq_encode(colour.pq_decode(hdr) * alpha**2.4).clamp(0.0, 1.0)
    if rng.random() < cfg.bars:
        sdr, hdr = sdr.clone(), hdr.clone()
        ctx = None if ctx is None else ctx.clone()
        if rng.random() < 0.5:  # letterbox: bars on top and bottom
            t = int(rng.integers(max(1, h // 16), max(2, h // 4) + 1))
            rows = [slice(0, t), slice(h - t, h)]
            for r in rows:
                sdr[:, r] = 0.0
                hdr[:, r.start * scale: r.stop * scale] = 0.0
                if ctx is not None:
                    ctx[:, r] = 0.0
        else:  # pillarbox
            t = int(rng.integers(max(1, w // 16), max(2, w // 4) + 1))
            for c in (slice(0, t), slice(w - t, w)):
                sdr[..., c] = 0.0
                hdr[..., c.start * scale: c.stop * scale] = 0.0
                if ctx is not None:
                    ctx[..., c] = 0.0
    if ctx is None:
        ctx = sdr  # the input's own statistics (taken before any grain, as smoothing would)
    second = sdr
    if rng.random() < cfg.grain:
        sigma = rng.uniform(*cfg.grain_sigma) / 255.0

        def grainy() -> Tensor:
            g = torch.from_numpy(rng.standard_normal((1, h, w)).astype(np.float32)) * sigma
            c = torch.from_numpy(rng.standard_normal((3, h, w)).astype(np.float32)) * (sigma * 0.3)
            return _quantize8(sdr + g + c)

        sdr, second = grainy(), (grainy() if cfg.stability > 0 else None)
        second = sdr if second is None else second
    return sdr, hdr, ctx, second


# --------------------------------------------------------------------------------------
# Film-test clips
# --------------------------------------------------------------------------------------


@dataclass
class Clip:
    """A short SDR clip (T,3,H,W) BT.709 R'G'B' (8-bit values) and how to measure it."""

    name: str
    frames: Tensor
    kind: str  # "fade", "cut", "pan", "letterbox", "black", "grain"
    shift: int = 0  # pan: horizontal input pixels per frame (content moves left)
    hold: int = 0  # fade: the last `hold` frames repeat the fade's last frame (the picture holds)
    bars: int = 0  # letterbox: bar height in input pixels (top and bottom)


def _scene(height: int, width: int, seed: int = 0) -> Tensor:
    """A procedural daylight scene in SDR R'G'B': a sky gradient with a bright sun and clouds, a
    horizon, textured grass and a few saturated objects (smooth areas, edges, detail, colour)."""
    g = torch.Generator().manual_seed(seed)
    yy = torch.linspace(0, 1, height)[:, None].expand(height, width)
    xx = torch.linspace(0, 1, width)[None, :].expand(height, width)
    horizon = 0.55
    sky = torch.stack([0.45 + 0.35 * yy, 0.62 + 0.25 * yy, 0.92 - 0.05 * yy])
    sun = torch.exp(-(((xx - 0.72) / 0.05) ** 2 + ((yy - 0.18) / 0.08) ** 2))
    clouds = torch.nn.functional.interpolate(torch.rand(1, 1, 6, 12, generator=g), size=(height, width),
                                             mode="bicubic", align_corners=False)[0, 0].clamp(0, 1)
    sky = (sky + 0.25 * clouds * (yy < horizon) + 0.6 * sun).clamp(0, 1)
    noise = torch.nn.functional.interpolate(torch.rand(1, 1, height // 2, width // 2, generator=g),
                                            size=(height, width), mode="nearest")[0, 0]
    grass = torch.stack([0.30 + 0.15 * noise, 0.45 + 0.2 * noise, 0.12 + 0.08 * noise]) * (1.1 - 0.5 * (yy - horizon))
    img = torch.where(yy < horizon, sky, grass)
    # a red sign, a white wall, a dark doorway
    box = lambda x0, x1, y0, y1: (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)  # noqa: E731
    img = torch.where(box(0.1, 0.22, 0.45, 0.7), torch.tensor([0.85, 0.1, 0.08])[:, None, None], img)
    img = torch.where(box(0.4, 0.6, 0.35, 0.75), torch.tensor([0.92, 0.9, 0.86])[:, None, None], img)
    img = torch.where(box(0.47, 0.53, 0.55, 0.75), torch.tensor([0.06, 0.05, 0.05])[:, None, None], img)
    return _quantize8(img)


def _night(height: int, width: int, seed: int = 1) -> Tensor:
    """A dark scene: deep blue sky, dim street, two bright lamps."""
    g = torch.Generator().manual_seed(seed)
    yy = torch.linspace(0, 1, height)[:, None].expand(height, width)
    xx = torch.linspace(0, 1, width)[None, :].expand(height, width)
    base = torch.stack([0.04 + 0.05 * yy, 0.05 + 0.06 * yy, 0.15 - 0.05 * yy])
    tex = torch.nn.functional.interpolate(torch.rand(1, 1, height // 4, width // 4, generator=g), size=(height, width),
                                          mode="bilinear", align_corners=False)[0, 0]
    img = base + 0.05 * tex * (yy > 0.6)
    for cx in (0.3, 0.75):
        lamp = torch.exp(-(((xx - cx) / 0.03) ** 2 + ((yy - 0.4) / 0.05) ** 2))
        img = img + torch.stack([1.0 * lamp, 0.85 * lamp, 0.55 * lamp])
    return _quantize8(img)


def film_clips(height: int = 72, width: int = 128, frames: int = 12, seed: int = 0) -> list[Clip]:
    """The standard film-test clips at ``width``×``height`` (even), ``frames`` frames each."""
    day, night = _scene(height, width, seed), _night(height, width, seed + 1)
    t = torch.linspace(0, 1, frames)
    clips = []
    # fade to (near) black and back: the signal scaled from 1 to 0.05, then the picture holds
    # for 2× the fade's length (brightness must stay put: no drift as statistics catch up)
    hold = 2 * frames
    alpha = torch.exp(torch.log(torch.tensor(0.05)) * t)
    held = lambda x: torch.cat([x, x[-1:].expand(hold, -1, -1, -1)])  # noqa: E731
    clips.append(Clip("fade-out", held(torch.stack([_quantize8(day * a) for a in alpha])), "fade", hold=hold))
    clips.append(Clip("fade-in", held(torch.stack([_quantize8(day * a) for a in alpha.flip(0)])), "fade", hold=hold))
    # a dissolve from the night scene into the day scene (neither a cut nor a pure fade), held
    dissolve = [night] * max(2, frames // 4) + [_quantize8((1 - a) * night + a * day) for a in t[1:]]
    clips.append(Clip("dissolve", held(torch.stack(dissolve)), "fade", hold=hold))
    # hard cuts: day → night → day
    k = frames // 3
    clips.append(Clip("cut", torch.stack([day] * k + [night] * k + [day] * (frames - 2 * k)), "cut"))
    # pan from a shaded part of the scene into full daylight (content moves left by `shift` px
    # per frame; the input's mean luminance rises about threefold, as when a camera pans onto sky)
    shift = max(2, width // 32)
    wide_w = width + shift * frames
    shade = torch.linspace(0.6, 1.0, wide_w).clamp(max=1.0)
    wide = _quantize8(_scene(height, wide_w, seed + 2) * shade)
    clips.append(Clip("pan", torch.stack([wide[..., i * shift: i * shift + width] for i in range(frames)]), "pan",
                      shift=shift))
    # letterbox 2.39:1 inside 16:9, static
    bars = max(2, (height - int(round(width / 2.39))) // 2 // 2 * 2)
    lb = day.clone()
    lb[:, :bars] = 0.0
    lb[:, height - bars:] = 0.0
    clips.append(Clip("letterbox", lb[None].repeat(max(2, frames // 4), 1, 1, 1), "letterbox", bars=bars))
    # black frames
    clips.append(Clip("black", torch.zeros(max(2, frames // 4), 3, height, width), "black"))
    # grain on a static shot (σ 2 codes, luma-correlated, a fresh draw per frame)
    g = torch.Generator().manual_seed(seed + 3)
    grainy = [_quantize8(day + torch.randn(1, height, width, generator=g) * (2.0 / 255)) for _ in range(frames)]
    clips.append(Clip("grain", torch.stack(grainy), "grain"))
    return clips


# --------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------

#: The bars of the "real films" issue, for reports (name → (comparison, limit)).
BARS: dict[str, tuple[str, float]] = {
    "black_mean_nits": ("<=", 0.05),
    "black_max_nits": ("<=", 0.2),
    "fade_max_reversal": ("<=", 0.01),
    "fade_min_gain": (">=", 0.5),
    "slope_min": (">=", 0.8),
    "slope_max": ("<=", 1.25),
    "max_jump": ("<=", 0.02),
    "hold_drift": ("<=", 0.05),
    "pan_flicker_excess_pu": ("<=", 0.2),
    "grain_flicker_excess_pu": ("<=", 0.25),
}


def display_luminance(rgb_pq: Tensor) -> Tensor:
    """(T,3,H,W) PQ BT.2020 R'G'B' → (T,H,W) luminance in cd/m² (BT.2020 Y of the decoded light)."""
    return colour.luminance(colour.pq_decode(rgb_pq.double()), "bt2020")[:, 0]


def input_luminance(sdr: Tensor, sdr_white: float = colour.SDR_REFERENCE_WHITE_NITS) -> Tensor:
    """(T,3,H,W) SDR BT.709 R'G'B' → (T,H,W) display luminance in cd/m² (BT.1886 at ``sdr_white``)."""
    return colour.luminance(colour.bt1886_eotf(sdr.double().clamp(0, 1), l_w=sdr_white), "bt709")[:, 0]


@dataclass
class ClipResult:
    name: str
    kind: str
    in_mean: list[float]
    out_mean: list[float]
    values: dict[str, float] = field(default_factory=dict)


def _slope(x: list[float], y: list[float]) -> float:
    lx, ly = np.log(np.asarray(x)), np.log(np.asarray(y))
    if np.ptp(lx) < 1e-6:
        return float("nan")
    return float(np.polyfit(lx, ly, 1)[0])


def measure_clip(clip: Clip, out_pq: Tensor, scale: int) -> ClipResult:
    """Temporal measurements of a processor's output ``out_pq`` (T,3,sH,sW) for ``clip``.

    * ``slope`` — least-squares slope of log(output mean luminance) on log(input mean) over the
      clip's frames (fades, cuts, pans; 1 = brightness follows the picture).
    * ``max_reversal`` (fades) — the largest frame-to-frame change of the output mean against
      the direction of the input's, relative; ``gain`` — log output change ÷ log input change
      from the first frame to the fade's last; ``hold_drift`` — the largest relative change of
      the output mean during the hold after the fade, from its first held frame.
    * ``max_jump`` — the largest relative change of the output mean between frames whose input
      mean changes by less than 0.5 %.
    * ``flicker_pu`` (pan, grain) — mean |ΔPU21| between consecutive frames after motion
      compensation (the pan's known shift), borders excluded: PU21 units (Mantiuk & Azimi 2021).
    * ``black_mean_nits``/``black_max_nits`` — over the whole frame (black clip) or the bars
      (letterbox, excluding the 2 input rows next to the picture).
    """
    lin_in = input_luminance(clip.frames)
    lin_out = display_luminance(out_pq)
    res = ClipResult(clip.name, clip.kind, lin_in.mean(dim=(1, 2)).tolist(), lin_out.mean(dim=(1, 2)).tolist())
    v = res.values
    ins, outs = np.asarray(res.in_mean), np.maximum(np.asarray(res.out_mean), 1e-6)
    if clip.kind in ("fade", "cut", "pan"):
        v["slope"] = _slope(ins, outs)
        d_in, d_out = np.diff(np.log(ins)), np.diff(np.log(outs))
        steady = np.abs(d_in) < math.log(1.005)
        v["max_jump"] = float(np.expm1(np.abs(d_out[steady])).max()) if steady.any() else 0.0
    if clip.kind == "fade":
        d_in, d_out = np.diff(ins), np.diff(outs)
        against = np.where(np.sign(d_in) != 0, -np.sign(d_in) * d_out / outs[:-1], 0.0)
        v["max_reversal"] = float(max(0.0, against.max()))
        end = len(ins) - 1 - clip.hold  # the fade's last frame
        v["gain"] = float(math.log(outs[end] / outs[0]) / math.log(ins[end] / ins[0]))
        v["hold_drift"] = float(np.abs(outs[end:] / outs[end] - 1.0).max())
    if clip.kind in ("pan", "grain"):
        pu = colour.pu21_encode(lin_out)
        s = clip.shift * scale
        m = 8 * scale  # border excluded (beyond the networks' receptive radius)
        if s:
            a, b = pu[1:, m:-m, m: -m - s], pu[:-1, m:-m, m + s: -m]
        else:
            a, b = pu[1:, m:-m, m:-m], pu[:-1, m:-m, m:-m]
        v["flicker_pu"] = float((a - b).abs().mean())
    if clip.kind == "black":
        v["black_mean_nits"] = float(lin_out.mean())
        v["black_max_nits"] = float(colour.pq_decode(out_pq.double()).amax())
    if clip.kind == "letterbox":
        b = (clip.bars - 2) * scale
        bars = torch.cat([out_pq[:, :, :b], out_pq[:, :, -b:]], dim=2)
        v["black_mean_nits"] = float(display_luminance(bars).mean())
        v["black_max_nits"] = float(colour.pq_decode(bars.double()).amax())
    return res


def run_processor_on_clip(process: Callable[[Tensor, list[bool]], Tensor], clip: Clip, batch: int = 4) -> Tensor:
    """Run ``process(frames, cut_flags)`` over a clip in stream order, in batches; returns the
    concatenated output. The first frame is flagged as a cut (the start of a stream)."""
    outs = []
    for i in range(0, clip.frames.shape[0], batch):
        x = clip.frames[i: i + batch]
        cuts = [i + j == 0 for j in range(x.shape[0])]
        outs.append(process(x, cuts).cpu())
    return torch.cat(outs)


def iter_bars(results: dict[str, list[ClipResult]]) -> Iterator[tuple[str, float]]:
    """Summary figures of one preset's results (for the BARS table)."""
    rs = {r.name: r for r in results}
    fades = [r for r in rs.values() if r.kind == "fade"]
    tracked = [r for r in rs.values() if r.kind in ("fade", "cut", "pan")]
    yield "black_mean_nits", max(rs["black"].values["black_mean_nits"], rs["letterbox"].values["black_mean_nits"])
    yield "black_max_nits", max(rs["black"].values["black_max_nits"], rs["letterbox"].values["black_max_nits"])
    yield "fade_max_reversal", max(r.values["max_reversal"] for r in fades)
    yield "fade_min_gain", min(r.values["gain"] for r in fades)
    yield "slope_min", min(r.values["slope"] for r in tracked)
    yield "slope_max", max(r.values["slope"] for r in tracked)
    yield "max_jump", max(r.values["max_jump"] for r in tracked)
    yield "hold_drift", max(r.values["hold_drift"] for r in fades)


# --------------------------------------------------------------------------------------
# The film test of a preset, next to bt2408
# --------------------------------------------------------------------------------------


def chain_runner(preset, weights: str | None = None, backend: str = "torch", device: str = "cpu",
                 temporal: str = "auto", fps: float = 24.0, deband: bool = True):
    """(process(frames, cuts) → PQ output, scale) running ``preset`` through the conversion's
    own device chain (:func:`hdrvideo.stages.build_chain`: scene cuts, deband, processor with
    its temporal smoothing, dither, peak roll-off), on float R'G'B' (no 10-bit packing)."""
    from ..dequantize import code_step
    from ..processors import build_processor
    from ..processors.temporal import DEFAULT_TIME_CONSTANT_S
    from ..stages import SDR, Frames, build_chain

    frames_tc = DEFAULT_TIME_CONSTANT_S * fps if (temporal == "auto" and preset.processor == "neural") else None
    processor = build_processor(preset, device=device, weights=weights, backend=backend, temporal_frames=frames_tc)
    state: dict = {}

    def process(x: Tensor, cuts: list[bool]) -> Tensor:
        h, w = x.shape[-2:]
        if "chain" not in state or state["size"] != (h, w):
            # as a conversion of an 8-bit source: deband on (the clips hold full-range 8-bit codes)
            state["chain"] = build_chain(processor, (w * preset.scale, h * preset.scale),
                                         preset.mastering.max_luminance, sdr_white=preset.sdr_white,
                                         deband_step=code_step(8, True) if deband else None)
            state["size"] = (h, w)
        f = Frames(x.to(processor.device).clone(), list(range(x.shape[0])), SDR, list(cuts))
        with torch.inference_mode():
            for stage in state["chain"]:
                f = stage(f)
        return f.rgb

    return process, preset.scale


def filmtest(preset, weights: str | None = None, backend: str = "torch", device: str = "cpu",
             size: tuple[int, int] = (128, 72), frames: int = 12, temporal: str = "auto",
             batch: int = 4) -> dict:
    """Film-test figures of ``preset`` and of ``bt2408`` on the same clips, and the bars.

    Returns ``{"preset": {...}, "bt2408": {...}, "bars": {name: (value, limit, passed)}}``.
    """
    from ..presets import load_preset

    clips = film_clips(height=size[1], width=size[0], frames=frames)
    out = {}
    for label, p, w in (("preset", preset, weights), ("bt2408", load_preset("bt2408").replace(scale=preset.scale), None)):
        process, scale = chain_runner(p, w, backend, device, temporal)
        results = []
        for clip in clips:
            cuts_fn = process
            results.append(measure_clip(clip, run_processor_on_clip(cuts_fn, clip, batch), scale))
        out[label] = {r.name: {"kind": r.kind, "in_mean": r.in_mean, "out_mean": r.out_mean, **r.values}
                      for r in results}
        out[label + "_results"] = results
    summary = dict(iter_bars(out.pop("preset_results")))
    base = {r.name: r for r in out.pop("bt2408_results")}
    summary["pan_flicker_excess_pu"] = out["preset"]["pan"]["flicker_pu"] - base["pan"].values["flicker_pu"]
    summary["grain_flicker_excess_pu"] = out["preset"]["grain"]["flicker_pu"] - base["grain"].values["flicker_pu"]
    bars = {}
    for name, (cmp, limit) in BARS.items():
        value = summary[name]
        bars[name] = (value, limit, bool(value <= limit if cmp == "<=" else value >= limit))
    out["bars"] = bars
    return out
