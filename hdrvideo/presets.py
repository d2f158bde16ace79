"""Presets: TOML data describing a conversion (processor, scale, target box, mastering display,
encoder defaults). Built-in presets live in the ``presets/`` folder (installed as the
``hdrvideo.presets`` package data); a user preset is any ``.toml`` file with the same keys.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UsageError

__all__ = [
    "Preset",
    "ModelSpec",
    "MasteringDisplay",
    "EncodeSettings",
    "load_preset",
    "list_presets",
    "DEFAULT_PRESET",
    "engines_dirs",
    "find_weights",
    "output_size",
]

DEFAULT_PRESET = "bt2408"
PROCESSORS = ("bt2408", "neural", "auto")


@dataclass(frozen=True)
class MasteringDisplay:
    """SMPTE ST 2086 mastering display colour volume written as HDR10 static metadata."""

    primaries: str = "p3-d65"
    max_luminance: float = 1000.0  # cd/m²
    min_luminance: float = 0.0001  # cd/m²


@dataclass(frozen=True)
class EncodeSettings:
    encoder: str = "libx265"
    crf: float = 18.0
    x265_preset: str = "medium"
    chroma_siting: str = "left"
    # delivery (README "Delivery"): rates are bit/s or "8M"/"800k"; keyint is frames or "2s"
    x265_params: str = ""
    keyint: int | str = 0  # 0 = the encoder's scene-cut-driven GOPs
    closed_gop: bool = False
    bitrate: int | str = 0  # 0 = constant quality (crf)
    maxrate: int | str = 0
    bufsize: int | str = 0
    two_pass: bool = False
    level: str | float = ""  # "5.1"; "" = the encoder's choice
    tier: str = "main"
    fragmented: bool = False  # MP4/MOV: fragmented (CMAF-style) instead of moov-first
    audio: str = "copy"  # copy | aac | none
    audio_bitrate: int | str = 0  # AAC bit rate; 0 = 64 kbit/s per channel


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    weights: str | None = None  # file name in an engines dir, or a path
    colour_domain: str = "rgb"  # "rgb" or "ycrcb601" (official IRNet checkpoints)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    processor: str = "bt2408"
    scale: int = 1
    target: tuple[int, int] = (3840, 2160)  # the box the output is fitted into (W, H)
    sdr_white: float = 203.0
    model: ModelSpec | None = None
    mastering: MasteringDisplay = field(default_factory=MasteringDisplay)
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    batch: int = 4
    tile: int = 0  # 0 = untiled; else the tile edge in input pixels
    tile_overlap: int = 16
    auto: tuple[tuple[int, str], ...] = ()  # (max input height, preset name), for processor "auto"
    crop: str = ""  # "" (none), "auto" (detect letterbox/pillarbox bars) or "W:H:X:Y"
    pad_back: bool = False  # pad a cropped picture back to the full (scaled) frame with black bars
    source: str = ""

    def replace(self, **changes: Any) -> "Preset":
        return dataclasses.replace(self, **changes)

    def resolve(self, input_height: int) -> "Preset":
        """The concrete preset for an input of this height (``auto`` presets pick by height)."""
        if self.processor != "auto":
            return self
        for max_height, name in self.auto:
            if input_height <= max_height:
                return load_preset(name)
        return load_preset(self.auto[-1][1])


def _data_dir(package: str, folder: str):
    """An installed data package (``presets/`` → ``hdrvideo.preset_files``, ``engines/`` →
    ``hdrvideo.engines``), or the top-level folder itself when running from a source checkout."""
    try:
        return resources.files(package)
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[1] / folder


def _builtin_dir():
    return _data_dir("hdrvideo.preset_files", "presets")


def list_presets() -> list[Preset]:
    """All built-in presets, sorted by name."""
    out = []
    for entry in _builtin_dir().iterdir():
        if entry.name.endswith(".toml"):
            out.append(_parse(entry.read_text(encoding="utf-8"), entry.name[:-5], str(entry)))
    return sorted(out, key=lambda p: p.name)


def load_preset(name_or_path: str | os.PathLike[str]) -> Preset:
    """Load a built-in preset by name, or a user preset from a ``.toml`` path."""
    text_name = str(name_or_path)
    path = Path(text_name)
    if text_name.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise UsageError(f"preset file not found: {text_name}")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise UsageError(f"cannot read preset {text_name}: {err.strerror}") from err
        return _parse(text, path.stem, str(path.resolve()))
    entry = _builtin_dir() / f"{text_name}.toml"
    if not entry.is_file():
        names = ", ".join(p.name for p in list_presets())
        raise UsageError(f"unknown preset {text_name!r} (built-in presets: {names}; or pass a .toml file)")
    return _parse(entry.read_text(encoding="utf-8"), text_name, str(entry))


def _take(table: dict[str, Any], cls: type, where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise UsageError(f"preset {where}: unknown key(s) {', '.join(unknown)}")
    return cls(**table)


def _parse(text: str, default_name: str, source: str) -> Preset:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"preset {source}: invalid TOML: {err}") from err
    where = data.get("name", default_name)
    known = {f.name for f in dataclasses.fields(Preset)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(f"preset {where}: unknown key(s) {', '.join(unknown)}")
    kw: dict[str, Any] = dict(data)
    kw.setdefault("name", default_name)
    kw.setdefault("description", "")
    kw["source"] = source
    if "model" in kw:
        kw["model"] = _take(kw["model"], ModelSpec, f"{where} [model]")
    if "mastering" in kw:
        kw["mastering"] = _take(kw["mastering"], MasteringDisplay, f"{where} [mastering]")
    if "encode" in kw:
        kw["encode"] = _take(kw["encode"], EncodeSettings, f"{where} [encode]")
    if "target" in kw:
        kw["target"] = tuple(int(v) for v in kw["target"])
    if "auto" in kw:
        kw["auto"] = tuple((int(r["max_height"]), str(r["preset"])) for r in kw["auto"])
    preset = Preset(**kw)
    _validate(preset)
    return preset


def _validate(p: Preset) -> None:
    from .colour import CHROMA_SITING, PRIMARIES

    if p.processor not in PROCESSORS:
        raise UsageError(f"preset {p.name}: processor must be one of {', '.join(PROCESSORS)}")
    if p.processor == "neural" and p.model is None:
        raise UsageError(f"preset {p.name}: a neural preset needs a [model] table")
    if p.processor == "auto" and not p.auto:
        raise UsageError(f"preset {p.name}: an auto preset needs [[auto]] rules")
    if p.scale not in (1, 2, 4):
        raise UsageError(f"preset {p.name}: scale must be 1, 2 or 4")
    if len(p.target) != 2 or min(p.target) < 16 or any(v % 2 for v in p.target):
        raise UsageError(f"preset {p.name}: target must be [width, height], even, ≥ 16")
    if p.mastering.primaries not in PRIMARIES:
        raise UsageError(f"preset {p.name}: unknown mastering primaries {p.mastering.primaries!r}")
    if not 0 < p.mastering.min_luminance < p.mastering.max_luminance <= 10000:
        raise UsageError(f"preset {p.name}: mastering luminance must satisfy 0 < min < max ≤ 10000")
    if p.encode.chroma_siting not in CHROMA_SITING:
        raise UsageError(f"preset {p.name}: unknown chroma_siting {p.encode.chroma_siting!r}")
    if p.batch < 1 or p.tile < 0 or p.tile_overlap < 0:
        raise UsageError(f"preset {p.name}: batch must be ≥ 1, tile and tile_overlap ≥ 0")
    try:
        check_delivery(p.encode)
        if p.crop and p.crop != "auto":
            from .media.crop import parse_crop

            parse_crop(p.crop)
    except UsageError as err:
        raise UsageError(f"preset {p.name}: {err}") from None


AUDIO_MODES = ("copy", "aac", "none")


def check_delivery(enc: EncodeSettings) -> None:
    """Check the delivery settings that need no input (rates, level, modes, x265 parameters)."""
    from fractions import Fraction

    from .media.encode import check_x265_params, parse_keyint, parse_rate
    from .media.hevc_levels import TIERS, parse_level

    bitrate = parse_rate(enc.bitrate, "bitrate")
    maxrate = parse_rate(enc.maxrate, "maxrate")
    bufsize = parse_rate(enc.bufsize, "bufsize")
    parse_rate(enc.audio_bitrate, "audio bitrate")
    if bool(maxrate) != bool(bufsize):
        raise UsageError("--maxrate and --bufsize go together (VBV needs both)")
    if bitrate and maxrate and bitrate > maxrate:
        raise UsageError("--bitrate must not exceed --maxrate")
    if enc.two_pass and not bitrate:
        raise UsageError("--two-pass needs --bitrate (the target the second pass meets)")
    parse_keyint(enc.keyint, Fraction(1000))  # syntax only: seconds become frames at the input's rate
    parse_level(enc.level)
    if enc.tier not in TIERS:
        raise UsageError(f"unknown HEVC tier {enc.tier!r} (choose main or high)")
    if enc.audio not in AUDIO_MODES:
        raise UsageError(f"unknown audio mode {enc.audio!r} (choose copy, aac or none)")
    if enc.encoder == "hevc_nvenc" and enc.x265_params:
        raise UsageError("--x265-params needs the libx265 encoder")
    check_x265_params(enc.x265_params, keyint=bool(enc.keyint), closed_gop=enc.closed_gop)


def engines_dirs() -> list[Path]:
    """Where weights are looked up, in order: $HDRVIDEO_ENGINES, the user data dir, the package."""
    from platformdirs import user_data_dir

    dirs = []
    if os.environ.get("HDRVIDEO_ENGINES"):
        dirs.append(Path(os.environ["HDRVIDEO_ENGINES"]))
    dirs.append(Path(user_data_dir("hdrvideo")) / "engines")
    dirs.append(Path(str(_data_dir("hdrvideo.engines", "engines"))))
    return dirs


def find_weights(preset: Preset) -> Path | None:
    """The installed weights file of a neural preset, or None if it is not installed."""
    if preset.model is None or not preset.model.weights:
        return None
    given = Path(preset.model.weights)
    if given.is_absolute():
        return given if given.is_file() else None
    if preset.source and not preset.source.startswith(str(_builtin_dir())):
        beside = Path(preset.source).parent / given
        if beside.is_file():
            return beside
    for d in engines_dirs():
        if (d / given).is_file():
            return d / given
    return None


def output_size(width: int, height: int, scale: int, box: tuple[int, int]) -> tuple[int, int]:
    """Input size × model scale, fitted down into ``box`` keeping the aspect ratio, even dims.

    Never pads or stretches: 1280×720 ×4 in 3840×2160 → 3840×2160; 640×272 ×4 → 2560×1088.
    """
    w, h = width * scale, height * scale
    bw, bh = box
    if w > bw or h > bh:
        f = min(bw / w, bh / h)
        w, h = w * f, h * f
    # round to even, never above the box
    w = min(int(round(w / 2)) * 2, bw - bw % 2)
    h = min(int(round(h / 2)) * 2, bh - bh % 2)
    return max(w, 2), max(h, 2)
