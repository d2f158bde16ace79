"""Stable exception types of the public API, each with the CLI exit code it maps to.

Exit codes (documented in the README): 0 ok, 1 conversion failed, 2 usage or bad input,
3 partial batch (some jobs of a batch failed), 130 interrupted.
"""

from __future__ import annotations


class HdrvideoError(Exception):
    """Base class of every error hdrvideo raises on purpose. ``str(err)`` is one line."""

    exit_code = 1


class InputError(HdrvideoError):
    """The input is missing, unreadable or not something hdrvideo can convert."""

    exit_code = 2


class UnsupportedInputError(InputError):
    """The input is a valid video but not an SDR source we convert (HDR, audio only, odd size…)."""


class UsageError(HdrvideoError):
    """Bad options or preset (unknown preset, conflicting flags, existing output without --force)."""

    exit_code = 2


class OutputExistsError(UsageError):
    """The output already exists and ``force`` was not given."""


class WeightsError(UsageError, ValueError):
    """A weights file that cannot be used: unreadable, not found, pickled code, non-finite or
    non-floating-point values, or tensors that do not fit the architecture."""


class WeightsMissingError(WeightsError):
    """A neural preset's weights are not installed and none were given with ``--weights``."""


class EncoderError(HdrvideoError):
    """The encoder or muxer failed (encoder missing, rejected options, write error)."""


class BackendError(HdrvideoError):
    """An inference backend is unavailable or failed (no GPU, no TensorRT, provider fallback)."""


class ModelOutputError(BackendError):
    """The network produced non-finite values (NaN or infinity); the conversion stops."""
