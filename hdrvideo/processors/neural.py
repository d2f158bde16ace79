"""Neural processor: a network (SR-ITM or ITM) run by a backend, optionally tiled."""

from __future__ import annotations

import torch
from torch import Tensor

from ..backends.base import Backend
from ..colour import PQ_MAX_NITS, SDR_REFERENCE_WHITE_NITS
from .temporal import TemporalContext


class NeuralProcessor:
    """Runs ``backend`` on batches, in tiles when ``tile`` > 0, and clips to [0,1].

    Tiling (with ``overlap`` input pixels blended by a smooth window) keeps peak memory
    bounded for large frames: a 4K output never needs one giant activation tensor. Backends
    that offer ``run_tiled`` compute the network's image-level statistics (attention vectors,
    global priors) once on the whole frame, so tiles agree with the untiled result: torch with
    the model's ``global_context``, onnxruntime and TensorRT with an exported *context* graph
    (whole frame → statistics) and a *tile* graph (tile + statistics → output). A backend
    without ``run_tiled`` falls back to per-tile statistics, which is approximate.
    """

    #: The networks are trained on HDR10 grades with SDR reference white at 203 cd/m² (BT.2408);
    #: the chain scales their output for another ``sdr_white`` (:class:`hdrvideo.stages.ScaleLight`).
    sdr_white = SDR_REFERENCE_WHITE_NITS
    #: Unbounded output: the chain always rolls it off to the mastering peak.
    max_nits = PQ_MAX_NITS

    def __init__(self, backend: Backend, scale: int, tile: int = 0, overlap: int = 16, description: str = "",
                 temporal: TemporalContext | None = None) -> None:
        self.backend = backend
        self.scale = int(scale)
        self.tile = int(tile)
        self.overlap = int(overlap)
        self.device = backend.device
        self.description = description
        self.temporal = temporal

    @torch.inference_mode()
    def process(self, frames) -> Tensor:
        """A batch of consecutive frames (:class:`hdrvideo.stages.Frames`) in stream order.

        With temporal smoothing, the network's image-level statistics of each frame are
        computed (``backend.context``), smoothed over the shot (:class:`TemporalContext`,
        restarted at ``frames.cut``), and the network runs with them fixed
        (``backend.run_with_context``, tiled or not). Without it, as :meth:`__call__`.
        """
        if self.temporal is None:
            return self(frames.rgb)
        ctx = self.backend.context(frames.rgb)
        if ctx is None:
            return self(frames.rgb)
        ctx = self.temporal(ctx, frames.cut)
        h, w = frames.rgb.shape[-2:]
        tile = self.tile if self.tile and (h > self.tile or w > self.tile) else 0
        return self.backend.run_with_context(frames.rgb, ctx, tile, self.overlap).clamp_(0.0, 1.0)

    @torch.inference_mode()
    def __call__(self, rgb: Tensor) -> Tensor:
        h, w = rgb.shape[-2:]
        if self.tile and (h > self.tile or w > self.tile):
            run_tiled = getattr(self.backend, "run_tiled", None)
            if run_tiled is not None:  # exact: the model's global statistics are computed once
                out = run_tiled(rgb, self.tile, self.overlap)
            else:  # a backend without run_tiled: every tile computes its own statistics (approximate)
                from .tiling import tiled_forward

                out = tiled_forward(self.backend.run, rgb, self.scale, self.tile, self.overlap)
        else:
            out = self.backend.run(rgb)
        return out.clamp_(0.0, 1.0)
