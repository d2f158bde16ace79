"""The process stage: classical or neural processors behind one interface."""

from __future__ import annotations

import torch

from ..errors import WeightsMissingError
from ..presets import Preset, engines_dirs, find_weights
from .base import Processor
from .classical import BT2408Processor, HdrExpandProcessor

__all__ = ["Processor", "BT2408Processor", "HdrExpandProcessor", "build_processor", "default_memory_limit"]


def build_processor(
    preset: Preset,
    device: str | torch.device | None = None,
    weights: str | None = None,
    backend: str = "auto",
    input_size: tuple[int, int] | None = None,
    temporal_frames: float | None = None,
    memory_limit: int | None = None,
    **backend_options,
) -> Processor:
    """Build the processor a (resolved, non-``auto``) preset describes.

    Neural presets need weights: ``weights`` overrides the preset's; without either an
    installed file raises :class:`WeightsMissingError`. A neural preset never runs with
    random weights. ``input_size`` (W, H of the frames to come) lets a backend that compiles
    per shape (TensorRT) build its engines now, so a failure there lets ``auto`` fall through.
    ``temporal_frames``: smooth the network's image-level statistics over time with this time
    constant in frames (:class:`~hdrvideo.processors.temporal.TemporalContext`); None = per frame.
    ``memory_limit``: bytes for the network's working set; frames that need more are processed
    in exact tiles (None: :func:`default_memory_limit`; 0: never tile unless the preset's
    ``tile`` says so).
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if preset.processor == "bt2408":
        return BT2408Processor(scale=preset.scale, sdr_white=preset.sdr_white, device=device)
    if preset.processor == "hdr-expand":
        return HdrExpandProcessor(
            scale=preset.scale, sdr_white=preset.sdr_white, peak=preset.mastering.max_luminance,
            knee=preset.expand.knee, saturation=preset.expand.saturation, device=device,
        )
    if preset.processor != "neural" or preset.model is None:
        raise ValueError(f"preset {preset.name} must be resolved before building a processor")

    from ..backends import create_backend
    from ..models import load_model

    path = weights or find_weights(preset)
    if path is None:
        wanted = preset.model.weights or f"a {preset.model.arch} checkpoint"
        raise WeightsMissingError(
            f"preset {preset.name!r} needs weights ({wanted}) that are not installed; "
            f"pass --weights PATH (.safetensors or .pth) or copy the file into {engines_dirs()[-2] if len(engines_dirs()) > 1 else engines_dirs()[0]}"
        )
    model = load_model(preset.model.arch, str(path), colour_domain=preset.model.colour_domain)
    if getattr(model, "scale", preset.scale) != preset.scale:
        raise WeightsMissingError(f"preset {preset.name!r}: model scale {model.scale} != preset scale {preset.scale}")
    opts = {"batch": preset.batch, "tile": preset.tile, **({"input_size": input_size} if input_size else {}),
            "two_part": bool(temporal_frames), **backend_options}
    be = create_backend(backend, model, device=device, **opts)
    from .temporal import TemporalContext

    from ..models import get_spec

    temporal = TemporalContext(temporal_frames) if temporal_frames else None
    if memory_limit is None:
        memory_limit = default_memory_limit(be.device)
    return NeuralProcessor(
        be,
        scale=preset.scale,
        tile=preset.tile,
        overlap=preset.tile_overlap,
        description=f"{preset.model.arch} ({be.name} on {be.device}"
                    + (f"; {be.describe()})" if hasattr(be, "describe") else ")")
                    + (f", statistics smoothed over {temporal_frames:.3g} frames" if temporal else ""),
        temporal=temporal,
        memory_limit=memory_limit,
        bytes_per_pixel=get_spec(preset.model.arch).bytes_per_pixel,
    )


#: the network's working-set budget on the CPU: with x265 at 4K, the decoder, the light meter
#: and the libraries, a 960×540 → 3840×2160 conversion then stays within about 3 GB
CPU_MEMORY_LIMIT = 512 << 20


def default_memory_limit(device: torch.device) -> int:
    """Bytes for the network's working set: 512 MiB on the CPU; half the free memory of a GPU.

    (GPU activations of the FP16 paths are about half the measured FP32 CPU figures, so this
    leaves room for a second batch in flight.)
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    return CPU_MEMORY_LIMIT


from .neural import NeuralProcessor  # noqa: E402
