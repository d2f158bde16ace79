"""hdrvideo: SDR (BT.709) → HDR10 (PQ, BT.2020, HEVC Main10) video conversion.

Public API (the CLI is a thin layer over it)::

    import hdrvideo
    report = hdrvideo.convert("movie.mp4", "movie.hdr10.mp4", preset="sr4-itm", crf=18)
    print(report.max_cll, report.max_fall)

Lower level: :class:`Pipeline` with :class:`ConvertOptions`, :func:`load_preset`,
:func:`probe`. Farms: :class:`Job`, :func:`run_batch` (resumable batches) and
:func:`convert_chunked` (one film split at keyframes over several workers or GPUs). Errors are :class:`HdrvideoError` subclasses with one-line messages.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (
    BackendError,
    EncoderError,
    HdrvideoError,
    InputError,
    ModelOutputError,
    OutputExistsError,
    UnsupportedInputError,
    UsageError,
    WeightsError,
    WeightsMissingError,
)
from .presets import Preset, list_presets, load_preset

__all__ = [
    "__version__",
    "convert",
    "Pipeline",
    "ConvertOptions",
    "ProgressEvent",
    "Report",
    "Preset",
    "load_preset",
    "list_presets",
    "probe",
    "MediaInfo",
    "HdrvideoError",
    "InputError",
    "UnsupportedInputError",
    "UsageError",
    "OutputExistsError",
    "WeightsError",
    "WeightsMissingError",
    "EncoderError",
    "BackendError",
    "ModelOutputError",
    "Job",
    "convert_chunked",
    "run_batch",
]

#: name → module, imported on first use: the conversion pulls in torch and PyAV, the farm
#: multiprocessing and optional Ray; ``hdrvideo --help``, ``presets`` and ``probe`` need neither torch.
_LAZY = {
    "convert": "pipeline", "Pipeline": "pipeline", "ConvertOptions": "pipeline", "ProgressEvent": "pipeline",
    "Report": "pipeline", "probe": "media.probe", "MediaInfo": "media.probe",
    "Job": "farm", "convert_chunked": "farm", "run_batch": "farm",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hdrvideo' has no attribute {name!r}")
