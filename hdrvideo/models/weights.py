"""Loading and saving weights: safetensors and (safely unpickled) .pth/.pt checkpoints.

* ``.safetensors`` is read with ``safetensors.torch``; its header metadata (``arch``, ``scale``,
  ``colour_domain`` written by :func:`save_weights`) is used by :func:`load_model`.
* ``.pth``/``.pt``/``.ckpt`` are read with ``torch.load(map_location="cpu", weights_only=True)``,
  which refuses to run arbitrary pickled code.
* Every tensor must be floating point and finite (no NaN or infinity): such weights would turn
  into flat or garbage video, so they are refused with :class:`WeightsError`.
* Common wrappers are unwrapped: ``{"params_ema": sd}``, ``{"params": sd}``,
  ``{"state_dict": sd}``, ``{"model": sd}``, ``{"net": sd}``, and a ``"module."`` prefix
  (DataParallel) shared by every key.

Weights always load into the model object itself (the architecture's parameters are registered
at top level, see :mod:`hdrvideo.models.base`), strictly: any missing, unexpected or mis-shaped
key raises :class:`WeightsError` with the offending names.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..errors import WeightsError as _WeightsError

# in order of preference when a checkpoint holds several (BasicSR saves params and params_ema)
WRAPPER_KEYS = ("params_ema", "params-ema", "params", "state_dict", "model", "net", "network", "generator")
_LIST_LIMIT = 8


class WeightsError(_WeightsError):
    """Weights that do not fit an architecture, or a file that holds no usable state_dict.

    An :class:`hdrvideo.errors.UsageError` (exit code 2) and a ``ValueError``.
    """

    def __init__(
        self,
        message: str,
        *,
        missing: list[str] | None = None,
        unexpected: list[str] | None = None,
        mismatched: list[tuple[str, tuple, tuple]] | None = None,
    ) -> None:
        super().__init__(message)
        self.missing = list(missing or [])
        self.unexpected = list(unexpected or [])
        self.mismatched = list(mismatched or [])

    def __reduce__(self):  # picklable across worker processes despite the keyword-only fields
        return (_rebuild_weights_error, (type(self), str(self), self.missing, self.unexpected, self.mismatched))


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """The weights path does not exist (also a ``FileNotFoundError``)."""


def _rebuild_weights_error(cls, message, missing, unexpected, mismatched) -> "WeightsError":
    return cls(message, missing=missing, unexpected=unexpected, mismatched=mismatched)


def _clip(items: list[str], limit: int = _LIST_LIMIT) -> str:
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f", … (+{len(items) - limit} more)"


def format_mismatch(missing, unexpected, mismatched) -> str:
    """One-line summary of a key/shape mismatch, long lists truncated."""
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} key(s): {_clip(list(missing))}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} key(s): {_clip(list(unexpected))}")
    if mismatched:
        items = [f"{k} (file {tuple(got)} vs model {tuple(want)})" for k, got, want in mismatched]
        parts.append(f"mis-shaped {len(mismatched)} key(s): {_clip(items)}")
    return "; ".join(parts) if parts else "no differences"


def unwrap_state_dict(obj: Any) -> dict[str, Tensor]:
    """Return the flat ``{name: tensor}`` inside a checkpoint object (see module docstring)."""
    seen = 0
    while isinstance(obj, Mapping) and seen < 4:
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            break
        for key in WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        else:
            break
        seen += 1
    if not isinstance(obj, Mapping):
        raise WeightsError(f"checkpoint is a {type(obj).__name__}, not a state_dict")
    sd = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not sd:
        raise WeightsError(
            f"checkpoint holds no tensors (top-level keys: {_clip([str(k) for k in obj.keys()])})"
        )
    for prefix in ("module.",):
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read ``path`` → the unwrapped ``{name: tensor}`` state_dict on CPU (any supported format)."""
    return _read(path)[0]


def _read(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read ``path`` → (unwrapped state_dict on CPU, metadata).  Metadata only for safetensors."""
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise WeightsError(f"weights path is a folder: {path}")
        raise WeightsNotFoundError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = dict(f.metadata() or {})
            sd = load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise WeightsError(f"cannot read {path} as safetensors: {_first_line(e)}") from e
        if metadata.get("format") == CHECKPOINT_FORMAT:  # a training checkpoint: its model tensors
            sd = {k[len("model/"):]: v for k, v in sd.items() if k.startswith("model/")}
        sd = unwrap_state_dict(sd)
        check_values(sd, str(path))
        return sd, metadata
    if suffix in (".pth", ".pt", ".ckpt", ".bin"):
        sd = unwrap_state_dict(safe_torch_load(path))
        check_values(sd, str(path))
        return sd, {}
    raise WeightsError(f"unsupported weights format {path.suffix!r} ({path}); use .safetensors, .pth or .pt")


#: safetensors metadata ``format`` of a training checkpoint (see hdrvideo.training.train)
CHECKPOINT_FORMAT = "hdrvideo-train-checkpoint"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def safe_torch_load(path: str | os.PathLike) -> Any:
    """``torch.load`` restricted to tensors and plain containers (``weights_only=True``).

    A pickle that needs anything else (a class, a function: possibly code) is refused with a
    :class:`WeightsError` naming what it asked for; it is never unpickled.
    """
    import re
    import warnings

    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": not for the user's screen
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, …
        text = str(e)
        m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if m:
            raise WeightsError(f"refusing {path}: it holds pickled objects other than tensors "
                               f"(it asks for {m.group(1)}); only tensors and plain containers are loaded "
                               "from .pt/.pth files") from None
        m = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the documentation|$)", text, re.S)
        reason = " ".join(m.group(1).split()) if m else _first_line(e)
        raise WeightsError(f"cannot read {path}: {reason}") from None


def check_values(sd: Mapping[str, Tensor], source: str = "state_dict") -> None:
    """Raise :class:`WeightsError` for a non-floating-point or non-finite tensor."""
    for name, t in sd.items():
        if not (t.is_floating_point() or t.is_complex()) and not _is_counter(name, t):
            raise WeightsError(f"{source}: tensor {name} is {str(t.dtype).replace('torch.', '')}, not floating point")
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise WeightsError(f"{source}: tensor {name} has {bad} non-finite value(s) (NaN or infinity)")


def _is_counter(name: str, t: Tensor) -> bool:
    """BatchNorm's ``num_batches_tracked``: an integer counter, not a weight."""
    return name.endswith("num_batches_tracked") and t.numel() == 1


def check_state_dict(model: nn.Module, sd: Mapping[str, Tensor], source: str = "state_dict") -> None:
    """Raise :class:`WeightsError` unless ``sd`` has exactly ``model``'s keys and shapes."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in sd.items()}
    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    mismatched = [(k, got[k], want[k]) for k in want if k in got and got[k] != want[k]]
    if missing or unexpected or mismatched:
        arch = getattr(model, "arch", "") or type(model).__name__
        raise WeightsError(
            f"{source} does not fit {arch}: " + format_mismatch(missing, unexpected, mismatched),
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
        )


def load_state_dict_strict(model: nn.Module, sd: Mapping[str, Tensor], source: str = "state_dict") -> nn.Module:
    check_state_dict(model, sd, source)
    model.load_state_dict(dict(sd), strict=True)
    return model


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load ``path`` (.safetensors / .pth / .pt) into ``model`` strictly; returns ``model``.

    A safetensors file written by :func:`save_weights` records the colour domain and border
    padding the weights were trained with; they are applied to the model (weights only work
    in their own domain). Other files leave the model's settings as they are.
    """
    from .base import COLOUR_DOMAINS, PADDING_MODES

    sd, meta = _read(path)
    load_state_dict_strict(model, sd, source=str(path))
    domain = meta.get("colour_domain")
    if domain in COLOUR_DOMAINS and hasattr(model, "colour_domain"):
        model.colour_domain = domain
    padding = meta.get("padding_mode")
    if padding in PADDING_MODES and hasattr(model, "padding_mode"):
        model.padding_mode = padding
    return model


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model.state_dict()`` as safetensors, with arch/scale/colour_domain/padding_mode metadata.

    ``metadata`` entries (str → str) are added to / override the automatic ones.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise WeightsError(f"save_weights writes safetensors; give a .safetensors path, not {path.name!r}")
    meta: dict[str, str] = {"format": "pt"}
    for attr in ("arch", "scale", "colour_domain", "padding_mode"):
        value = getattr(model, attr, None)
        if value not in (None, ""):
            meta[attr] = str(value)
    meta.update(getattr(model, "required_metadata", {}))
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError("metadata must map str to str")
        meta[k] = v
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Header metadata of a safetensors file ({} for other formats)."""
    if Path(path).suffix.lower() != ".safetensors":
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_model(name: str | None, weights_path: str | os.PathLike, **options: Any) -> nn.Module:
    """Create architecture ``name`` (or detect it from the file when ``None``) and load weights.

    When the file is a safetensors written by :func:`save_weights`, its ``arch`` metadata is
    used if ``name`` is None (checked against the tensors) and its ``colour_domain`` becomes the
    default ``colour_domain`` option (an explicit ``colour_domain=None`` also means "from the
    file, else rgb"), likewise ``padding_mode`` (else "zeros", the official layout).  Returns
    the model in eval mode.
    """
    from .registry import _REGISTRY, create, detect

    sd, meta = _read(weights_path)
    if options.get("colour_domain") is None:
        options.pop("colour_domain", None)
    if name is None:
        meta_arch = meta.get("arch")
        if meta_arch in _REGISTRY and _REGISTRY[meta_arch].signature == {k: tuple(v.shape) for k, v in sd.items()}:
            name = meta_arch
        else:
            name = detect(sd)
    for key in ("colour_domain", "padding_mode"):
        if key not in options and meta.get(key):
            options[key] = meta[key]
    model = create(name, **options)
    for key, value in getattr(model, "required_metadata", {}).items():
        if meta.get(key) != value:
            raise WeightsError(
                f"{weights_path}: {name} weights must be trained with {key} = {value!r} (this file has "
                f"{meta.get(key, 'none')!r}); weights of the earlier unbounded {name} turn black into "
                f"peak white and are refused — retrain with `hdrvideo train --arch {name}`")
    load_state_dict_strict(model, sd, source=str(weights_path))
    return model.eval()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
