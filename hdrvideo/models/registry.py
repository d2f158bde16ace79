"""Architecture registry (spandrel-like): names → builders, parameter counts, detection.

Adding an architecture = one module under ``hdrvideo/models/`` (an :class:`ITMModel` subclass)
plus one :func:`register` line in ``_REGISTRY_LINES`` below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from ..errors import UsageError

from .agcm import AGCM
from .base import ITMModel
from .gpgmnet import GPGMNet
from .irnet import IRNet

IRNET_CITATION = (
    "Xue, Xu, Yu, He et al., 'Lightweight Improved Residual Network for Efficient Inverse Tone "
    "Mapping', arXiv:2307.03998 (2023)"
)
GPGMNET_CITATION = (
    "He, Long, Xu, Wu, Yu, Zhou, 'Global Priors Guided Modulation Network for Joint "
    "Super-Resolution and SDRTV-to-HDRTV', Neurocomputing 554 (2023); arXiv:2208.06885"
)
AGCM_CITATION = (
    "Chen, Zhang, Liu, Qiao, Dong, 'A New Journey from SDRTV to HDRTV', ICCV 2021 "
    "(HDRTVNet; HDRTVNet++, Li et al. 2023)"
)


class UnknownArchitectureError(UsageError, KeyError):
    """``create``/``get_spec`` got a name that is not registered (a usage error, exit code 2)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class ArchSpec:
    """One registered architecture."""

    name: str
    scale: int
    description: str
    builder: Callable[..., ITMModel]
    citation: str
    #: peak working memory of one eager float32 forward, bytes per input pixel (see below)
    bytes_per_pixel: int = 0
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def build(self, **options: Any) -> ITMModel:
        padding_mode = options.pop("padding_mode", None)
        model = self.builder(**options)
        model.arch = self.name
        if padding_mode is not None:
            model.padding_mode = padding_mode  # applied after the layers exist
        return model

    def _meta_model(self) -> ITMModel:
        if "meta" not in self._cache:
            with torch.device("meta"):
                self._cache["meta"] = self.build()
        return self._cache["meta"]

    @property
    def params(self) -> int:
        """Number of trainable parameters (computed from a meta-device build)."""
        if "params" not in self._cache:
            self._cache["params"] = sum(p.numel() for p in self._meta_model().parameters())
        return self._cache["params"]

    @property
    def signature(self) -> dict[str, tuple[int, ...]]:
        """state_dict key → shape, the fingerprint ``detect`` matches against."""
        if "sig" not in self._cache:
            self._cache["sig"] = {k: tuple(v.shape) for k, v in self._meta_model().state_dict().items()}
        return self._cache["sig"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scale": self.scale,
            "params": self.params,
            "description": self.description,
            "citation": self.citation,
        }


_REGISTRY: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"architecture {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


# bytes_per_pixel: the growth of the process's peak RSS during one torch CPU forward (float32,
# eval, one thread) of a 240×136 frame, per input pixel, plus about 10 %: intermediates and the
# convolution workspaces together. Tiling (hdrvideo.processors.neural) keeps
# bytes_per_pixel × batch × tile² within the memory limit.
# fmt: off
register(ArchSpec("irnet-2", 1, "IRNet ITM, 2 improved residual blocks, 64 channels (×1)", partial(IRNet, 2, 64, 1), IRNET_CITATION, 3200))
register(ArchSpec("irnet-1-48", 1, "IRNet ITM, 1 improved residual block, 48 channels (×1, smallest)", partial(IRNet, 1, 48, 1), IRNET_CITATION, 2200))
register(ArchSpec("irnet-5-x2", 2, "IRNet joint SR-ITM, 5 blocks, 64 channels, one PixelShuffle stage (×2)", partial(IRNet, 5, 64, 2), IRNET_CITATION, 4700))
register(ArchSpec("irnet-5-x4", 4, "IRNet joint SR-ITM, 5 blocks, 64 channels, two PixelShuffle stages (×4)", partial(IRNet, 5, 64, 4), IRNET_CITATION, 7000))
register(ArchSpec("gpgmnet-x2", 2, "GPGMNet joint SR-ITM with global colour/structure priors (×2)", partial(GPGMNet, 2), GPGMNET_CITATION, 5200))
register(ArchSpec("gpgmnet-x4", 4, "GPGMNet joint SR-ITM with global colour/structure priors (×4)", partial(GPGMNet, 4), GPGMNET_CITATION, 14100))
register(ArchSpec("agcm", 1, "HDRTVNet adaptive global colour mapping, per-pixel with a global condition (×1)", AGCM, AGCM_CITATION, 1600))
# fmt: on


def architecture_names() -> list[str]:
    return list(_REGISTRY)


def get_spec(name: str) -> ArchSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownArchitectureError(
            f"unknown architecture {name!r}; available: {', '.join(_REGISTRY)}"
        ) from None


def create(name: str, **options: Any) -> ITMModel:
    """Build a fresh (randomly initialised) model; ``options`` go to the architecture.

    Common options: ``colour_domain`` ("rgb" | "ycrcb601"), ``clamp_output`` (bool),
    ``padding_mode`` ("zeros" | "replicate").
    AGCM also takes ``condition_resize`` ("matlab" | "antialias" | "bicubic").
    """
    return get_spec(name).build(**options)


def list_architectures() -> list[dict[str, Any]]:
    """Plain dicts (name, scale, params, description, citation), in registry order."""
    return [spec.as_dict() for spec in _REGISTRY.values()]


def _diff(sig: Mapping[str, tuple[int, ...]], shapes: Mapping[str, tuple[int, ...]]):
    missing = [k for k in sig if k not in shapes]
    unexpected = [k for k in shapes if k not in sig]
    mismatched = [(k, shapes[k], sig[k]) for k in sig if k in shapes and shapes[k] != sig[k]]
    return missing, unexpected, mismatched


def detect(state_dict: Mapping[str, Any]) -> str:
    """Name of the registered architecture whose keys and shapes equal ``state_dict``'s.

    Common wrappers ({"params": sd}, {"state_dict": sd}, a "module." prefix ...) are unwrapped
    first.  Raises :class:`~hdrvideo.models.weights.WeightsError` naming the closest candidate
    and what differs when nothing matches exactly.
    """
    from .weights import WeightsError, format_mismatch, unwrap_state_dict

    sd = unwrap_state_dict(state_dict)
    shapes = {k: tuple(v.shape) for k, v in sd.items() if isinstance(v, Tensor)}
    best: tuple[int, str, tuple] | None = None
    for name, spec in _REGISTRY.items():
        missing, unexpected, mismatched = _diff(spec.signature, shapes)
        if not (missing or unexpected or mismatched):
            return name
        score = len(missing) + len(unexpected) + len(mismatched)
        if best is None or score < best[0]:
            best = (score, name, (missing, unexpected, mismatched))
    assert best is not None
    _, name, (missing, unexpected, mismatched) = best
    if len(missing) == len(_REGISTRY[name].signature):
        from .weights import _clip

        raise WeightsError(
            f"state_dict ({len(shapes)} tensors) shares no key with any registered architecture "
            f"({', '.join(_REGISTRY)}); its keys: {_clip(list(shapes))}",
            unexpected=list(shapes),
        )
    raise WeightsError(
        f"state_dict ({len(shapes)} tensors) matches no registered architecture "
        f"({', '.join(_REGISTRY)}); closest is {name!r}: "
        + format_mismatch(missing, unexpected, mismatched),
        missing=missing,
        unexpected=unexpected,
        mismatched=mismatched,
    )
