"""Presets: TOML data describing a conversion (processor, scale, target box, mastering display,
encoder defaults). Built-in presets live in the ``presets/`` folder (installed as the
``hdrvideo.presets`` package data); a user preset is any ``.toml`` file with the same keys.

Every value is checked when a preset is read, and the convert options that override preset
fields (``--crf``, ``--batch``, …) are checked by the same rules (:data:`OPTION_FIELDS`,
:func:`check_value`): a field's type comes from its annotation (``float``, ``int``, ``str``,
``bool``, ``tuple[int, int]``, ``Literal[...]``, ``X | None``) and its range or choices from a
:class:`Rule` in the field's metadata (``field(default=…, metadata=rule(lo=0, hi=51))``). A new
field is validated by adding it with an annotation (and a rule if its range matters); a new
convert option that overrides a field is one line in :data:`OPTION_FIELDS`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Literal

from .errors import UsageError

__all__ = [
    "Preset",
    "ModelSpec",
    "STYLES",
    "MasteringDisplay",
    "EncodeSettings",
    "ExpandSettings",
    "DEBAND_MODES",
    "load_preset",
    "list_presets",
    "DEFAULT_PRESET",
    "engines_dirs",
    "find_weights",
    "output_size",
]

DEFAULT_PRESET = "bt2408"
PROCESSORS = ("bt2408", "hdr-expand", "neural", "auto")
#: ``deband``: ``auto`` dequantises 8-bit sources only (see :class:`hdrvideo.stages.Deband`).
DEBAND_MODES = ("auto", "on", "off")
#: HEVC encoders (hdrvideo.media.encode.ENCODERS has their pixel layouts)
ENCODER_NAMES = ("libx265", "hevc_nvenc")
#: x265 speed presets (x265 --preset)
X265_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
#: inference backends (hdrvideo.backends.BACKENDS, plus "auto")
BACKEND_NAMES = ("auto", "torch", "onnxruntime", "tensorrt")
PQ_PEAK = 10000.0  # cd/m², the top of SMPTE ST 2084


@dataclass(frozen=True)
class Rule:
    """Range and choices of one value; its type comes from the field's annotation.

    ``lo``/``hi`` bound numbers (``lo_open``: ``lo`` itself excluded); ``choices`` is a tuple
    or a function returning one (for lists that live in heavier modules); ``even`` asks for
    even integers; ``nonfinite``: NaN and infinities allowed (never, by default).
    """

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple | Callable[[], tuple] | None = None
    even: bool = False

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self._choices())
        if self.lo is not None and self.hi is not None and not self.lo_open:
            return f"between {self.lo:g} and {self.hi:g}"
        lo = "" if self.lo is None else (f"> {self.lo:g}" if self.lo_open else f"≥ {self.lo:g}")
        hi = "" if self.hi is None else f"≤ {self.hi:g}"
        return " and ".join(p for p in (lo, hi) if p) or "valid"

    def _choices(self) -> tuple:
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def check(self, value: Any, label: str) -> None:
        if self.choices is not None and value not in self._choices():
            raise UsageError(f"{label} must be {self.describe()}, not {value!r}".strip())
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)) or \
                    (self.hi is not None and value > self.hi):
                raise UsageError(f"{label} must be {self.describe()}, not {value:g}")
            if self.even and int(value) % 2:
                raise UsageError(f"{label} must be even, not {value}")


def rule(**kw: Any) -> dict[str, Rule]:
    """Field metadata carrying a :class:`Rule`: ``field(default=1.0, metadata=rule(lo=0))``."""
    return {"rule": Rule(**kw)}


def _primaries() -> tuple:
    from .standards import PRIMARIES

    return tuple(PRIMARIES)


def _sitings() -> tuple:
    from .standards import CHROMA_SITING

    return tuple(CHROMA_SITING)


@dataclass(frozen=True)
class MasteringDisplay:
    """SMPTE ST 2086 mastering display colour volume written as HDR10 static metadata."""

    primaries: str = field(default="p3-d65", metadata=rule(choices=_primaries))
    max_luminance: float = field(default=1000.0, metadata=rule(lo=0, lo_open=True, hi=PQ_PEAK))  # cd/m²
    min_luminance: float = field(default=0.0001, metadata=rule(lo=0, lo_open=True, hi=PQ_PEAK))  # cd/m²


@dataclass(frozen=True)
class EncodeSettings:
    encoder: str = field(default="libx265", metadata=rule(choices=ENCODER_NAMES))
    crf: float = field(default=18.0, metadata=rule(lo=0, hi=51))  # x265 CRF / NVENC CQ: 0–51
    x265_preset: str = field(default="medium", metadata=rule(choices=X265_PRESETS))
    chroma_siting: str = field(default="left", metadata=rule(choices=_sitings))
    #: re-choose Y' at saturated edges so 4:2:0 keeps each pixel's luminance (hdrvideo.colour.luma_adjust)
    luma_adjust: bool = True
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
    audio: str = field(default="copy", metadata=rule(choices=lambda: AUDIO_MODES))  # copy | aac | none
    audio_bitrate: int | str = 0  # AAC bit rate; 0 = 64 kbit/s per channel


@dataclass(frozen=True)
class ExpandSettings:
    """Controls of the ``hdr-expand`` processor (:func:`hdrvideo.colour.hdr_expand_sdr_to_pq`);
    its peak is the mastering display's ``max_luminance``."""

    # SDR signal level (0–1) where expansion starts
    knee: float = field(default=0.8, metadata=rule(lo=0, lo_open=True, hi=0.99))
    # chroma gain above the knee: +0 at the knee → +saturation at SDR white
    saturation: float = field(default=0.5, metadata=rule(lo=0, hi=4))


#: The looks a neural preset can be trained for (README "Styles"): ``real`` — real HDR10
#: grading as HDRTV1K pairs it with SDR (taught by AGCM); ``broadcast`` — the inverse of the ITU
#: down-conversion chain, SDR white near 203 cd/m² (BT.2408).
STYLES = ("real", "broadcast")


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    weights: str | None = None  # file name in an engines dir, or a path (of the preset's style)
    colour_domain: Literal["rgb", "ycrcb601"] = "rgb"  # "ycrcb601": official IRNet checkpoints
    #: weights per style ([model.styles] real = "…", broadcast = "…"); the preset's ``style``
    #: picks ``weights`` from it
    styles: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    processor: str = field(default="bt2408", metadata=rule(choices=PROCESSORS))
    scale: int = field(default=1, metadata=rule(choices=(1, 2, 4)))
    # the box the output is fitted into (W, H)
    target: tuple[int, int] = field(default=(3840, 2160), metadata=rule(lo=16, hi=16384, even=True))
    sdr_white: float = field(default=203.0, metadata=rule(lo=0, lo_open=True, hi=PQ_PEAK))  # cd/m² for 100 % SDR
    model: ModelSpec | None = None
    #: the look of a neural preset with [model.styles] (:data:`STYLES`); "" for the others
    style: str = field(default="", metadata=rule(choices=STYLES))
    mastering: MasteringDisplay = field(default_factory=MasteringDisplay)
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    expand: ExpandSettings = field(default_factory=ExpandSettings)
    deband: str = field(default="auto", metadata=rule(choices=DEBAND_MODES))  # auto: 8-bit sources only
    batch: int = field(default=4, metadata=rule(lo=1))  # capped by a memory estimate (pipeline)
    tile: int = field(default=0, metadata=rule(lo=0))  # 0 = untiled; else the tile edge in input pixels
    tile_overlap: int = field(default=16, metadata=rule(lo=0, hi=1024))
    auto: tuple[tuple[int, str], ...] = ()  # (max input height, preset name), for processor "auto"
    crop: str = ""  # "" (none), "auto" (detect letterbox/pillarbox bars) or "W:H:X:Y"
    pad_back: bool = False  # pad a cropped picture back to the full (scaled) frame with black bars
    source: str = ""


    def replace(self, **changes: Any) -> "Preset":
        return dataclasses.replace(self, **changes)

    def with_style(self, style: str, weights: str | None = None) -> "Preset":
        """The preset with the weights of ``style`` (one of its [model.styles]).

        ``weights``: a candidate file for the style, which may be one the preset does not ship
        yet (``eval``/``filmtest --weights``: trained weights are judged before they ship).
        """
        if self.model is None or not self.model.styles:
            raise UsageError(f"preset {self.name} has no styles (only neural presets with [model.styles] do)")
        if style not in self.model.styles and not (weights and style in STYLES):
            raise UsageError(f"preset {self.name} has no {style!r} style (choose {', '.join(self.model.styles)})")
        return self.replace(style=style, model=dataclasses.replace(
            self.model, weights=weights or self.model.styles[style]))

    def resolve(self, input_height: int) -> "Preset":
        """The concrete preset for an input of this height (``auto`` presets pick by height, in
        their own ``style`` where the pick has it)."""
        if self.processor != "auto":
            return self
        name = next((n for h, n in self.auto if input_height <= h), self.auto[-1][1])
        picked = load_preset(name)
        if self.style and picked.model is not None and self.style in picked.model.styles:
            picked = picked.with_style(self.style)  # one look whatever the input's height
        return picked


#: Convert options (hdrvideo.ConvertOptions fields, CLI ``--crf`` …) that override a preset
#: field, and the field: they are checked by that field's rule.
OPTION_FIELDS: dict[str, tuple[type, str]] = {
    "encoder": (EncodeSettings, "encoder"),
    "crf": (EncodeSettings, "crf"),
    "x265_preset": (EncodeSettings, "x265_preset"),
    "batch": (Preset, "batch"),
    "tile": (Preset, "tile"),
    "peak_nits": (MasteringDisplay, "max_luminance"),
    "sdr_white": (Preset, "sdr_white"),
    "deband": (Preset, "deband"),
    "style": (Preset, "style"),
}


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
        except UnicodeDecodeError as err:
            raise UsageError(f"preset {text_name} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
        return _parse(text, path.stem, str(path.resolve()))
    entry = _builtin_dir() / f"{text_name}.toml"
    if not entry.is_file():
        names = ", ".join(p.name for p in list_presets())
        raise UsageError(f"unknown preset {text_name!r} (built-in presets: {names}; or pass a .toml file)")
    return _parse(entry.read_text(encoding="utf-8"), text_name, str(entry))


def _type_name(tp: Any) -> str:
    names = {float: "a number", int: "an integer", str: "a string", bool: "true or false"}
    return names.get(tp, f"a {getattr(tp, '__name__', tp)}")


def _coerce(tp: Any, value: Any, label: str, rule_: Rule | None) -> Any:
    """``value`` checked against annotation ``tp`` (and ``rule_``), converted (lists → tuples)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for alternative in inner:  # the first alternative the value fits
            try:
                return _coerce(alternative, value, label, rule_)
            except UsageError as err:
                errors.append(err)
        if len(inner) == 1:
            raise errors[0]
        kinds = " or ".join(_type_name(a) for a in inner)
        raise UsageError(f"{label} must be {kinds}, not {value!r}")
    if origin is Literal:
        if value not in args:
            raise UsageError(f"{label} must be one of {', '.join(map(str, args))}, not {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{label} must be a list, not {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{label}[{i}]", rule_) for i, v in enumerate(value))
        if len(value) != len(args):
            raise UsageError(f"{label} must be a list of {len(args)} values, not {len(value)}")
        return tuple(_coerce(a, v, f"{label}[{i}]", rule_) for i, (a, v) in enumerate(zip(args, value)))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{label} must be a number, not {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise UsageError(f"{label} must be a finite number, not {value}")
    elif tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{label} must be an integer, not {value!r}")
    elif tp in (str, bool):
        if not isinstance(value, tp):
            raise UsageError(f"{label} must be {_type_name(tp)}, not {value!r}")
    else:  # any other annotation (a table's dataclass, dict, list, …): at least the right kind
        kind = origin or tp
        if isinstance(kind, type) and not isinstance(value, kind):
            what = "a table" if dataclasses.is_dataclass(kind) else f"a {kind.__name__}"
            raise UsageError(f"{label} must be {what}, not {value!r}")
    if rule_ is not None:
        rule_.check(value, label)
    return value


def check_value(cls: type, name: str, value: Any, label: str) -> Any:
    """``value`` for field ``name`` of dataclass ``cls``, checked by its annotation and rule
    (one-line :class:`UsageError` naming ``label`` otherwise), in the field's type."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    tp = typing.get_type_hints(cls, include_extras=False)[name]
    return _coerce(tp, value, label, f.metadata.get("rule"))


def check_option(name: str, value: Any, label: str | None = None) -> Any:
    """A convert option that overrides a preset field (:data:`OPTION_FIELDS`), checked by its rule."""
    cls, fname = OPTION_FIELDS[name]
    return check_value(cls, fname, value, f"--{name.replace('_', '-')}" if label is None else label)


def _take(table: Any, cls: type, where: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A TOML table → keyword arguments of ``cls``, every value checked."""
    if not isinstance(table, dict):
        raise UsageError(f"preset {where} must be a table, not {table!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise UsageError(f"preset {where}: unknown key(s) {', '.join(unknown)}")
    missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING and n not in table and n not in skip]
    if missing:
        raise UsageError(f"preset {where}: missing key(s) {', '.join(missing)}")
    out = {}
    for key, value in table.items():
        out[key] = value if key in skip else check_value(cls, key, value, f"preset {where}: {key}")
    return out


def _auto_rules(rules: Any, where: str) -> tuple[tuple[int, str], ...]:
    if not isinstance(rules, list) or not rules:
        raise UsageError(f"preset {where}: [[auto]] must be a list of tables with max_height and preset")
    out = []
    for i, r in enumerate(rules):
        label = f"preset {where}: [[auto]] rule {i + 1}"
        if not isinstance(r, dict):
            raise UsageError(f"{label} must be a table with max_height and preset")
        unknown = sorted(set(r) - {"max_height", "preset"})
        missing = [k for k in ("max_height", "preset") if k not in r]
        if unknown or missing:
            raise UsageError(f"{label}: " + "; ".join(
                ([f"missing key(s) {', '.join(missing)}"] if missing else [])
                + ([f"unknown key(s) {', '.join(unknown)}"] if unknown else [])))
        h = _coerce(int, r["max_height"], f"{label}: max_height", Rule(lo=1))
        name = _coerce(str, r["preset"], f"{label}: preset", None)
        out.append((h, name))
    return tuple(out)


def _parse(text: str, default_name: str, source: str) -> Preset:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"preset {source}: invalid TOML: {err}") from err
    where = data.get("name", default_name)
    if not isinstance(where, str):
        raise UsageError(f"preset {default_name}: name must be a string, not {where!r}")
    tables = {"model": ModelSpec, "mastering": MasteringDisplay, "encode": EncodeSettings, "expand": ExpandSettings}
    kw = _take(data, Preset, where, skip=("name", "description", "source", "auto", *tables))
    kw.setdefault("name", default_name)
    kw.setdefault("description", "")
    for key in ("name", "description"):
        kw[key] = _coerce(str, kw[key], f"preset {where}: {key}", None)
    kw["source"] = source
    for key, cls in tables.items():
        if key in kw:
            kw[key] = cls(**_take(kw[key], cls, f"{where} [{key}]"))
    if "auto" in kw:
        kw["auto"] = _auto_rules(kw["auto"], where)
    model = kw.get("model")
    if model is not None and model.styles:
        for style, file in model.styles.items():
            check_value(Preset, "style", style, f"preset {where} [model.styles]: style")
            _coerce(str, file, f"preset {where} [model.styles]: {style}", None)
        if model.weights is not None:
            raise UsageError(f"preset {where}: give [model] weights or [model.styles], not both")
        style = kw.setdefault("style", next(iter(model.styles)))
        if style not in model.styles:
            raise UsageError(f"preset {where}: style {style!r} is not in [model.styles]")
        kw["model"] = dataclasses.replace(model, weights=model.styles[style])
    elif kw.get("style") and kw.get("processor") != "auto":
        raise UsageError(f"preset {where}: style needs [model.styles] (or processor = \"auto\": the style of its picks)")
    preset = Preset(**kw)
    _validate(preset)
    return preset


def _validate(p: Preset) -> None:
    """What no single field can check: combinations of fields."""
    if p.processor == "neural" and p.model is None:
        raise UsageError(f"preset {p.name}: a neural preset needs a [model] table")
    if p.processor == "auto" and not p.auto:
        raise UsageError(f"preset {p.name}: an auto preset needs [[auto]] rules")
    if not p.mastering.min_luminance < p.mastering.max_luminance:
        raise UsageError(f"preset {p.name}: mastering luminance must satisfy 0 < min < max ≤ {PQ_PEAK:g}")
    check_tile(p.tile, p.tile_overlap, f"preset {p.name}: tile")
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


def check_tile(tile: int, overlap: int, label: str = "--tile") -> None:
    """A tile edge is 0 (whole frame) or larger than the overlap between tiles."""
    if tile and tile <= overlap:
        raise UsageError(f"{label} must be 0 (whole frame) or larger than the tile overlap ({overlap} pixels), "
                         f"not {tile}")


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


def output_sample_aspect(sample_aspect: Fraction | None, source: tuple[int, int],
                         out: tuple[int, int]) -> Fraction | None:
    """The output's pixel aspect that shows ``source`` (W, H) pixels of aspect ``sample_aspect``
    at the same display aspect in ``out`` (W, H) pixels, as FFmpeg's scale filter sets it.

    None (square pixels) for a square-pixel source: there the output's even rounding, at most one
    pixel, is not worth a non-square aspect. Both terms fit the 16 bits of the HEVC VUI's
    ``sar_width``/``sar_height`` (ITU-T H.265 Annex E.2.1).
    """
    if not sample_aspect or sample_aspect == 1:
        return None
    sar = Fraction(sample_aspect) * Fraction(source[0] * out[1], source[1] * out[0])
    if sar == 1:
        return None
    limit = 65535
    if sar.numerator > limit or sar.denominator > limit:
        sar = sar.limit_denominator(limit)
        if sar.numerator > limit:
            sar = 1 / (1 / sar).limit_denominator(limit)
    return sar


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
