"""Neural processor: a network (SR-ITM or ITM) run by a backend, optionally tiled."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..backends.base import Backend
from ..colour import PQ_MAX_NITS, SDR_REFERENCE_WHITE_NITS
from .temporal import TemporalContext


class NeuralProcessor:
    """Runs ``backend`` on batches — whole frames, or tiles within a memory budget — and clips to [0,1].

    Tiling (with ``overlap`` input pixels blended by a smooth window) bounds the working memory:
    a 4K output never needs one giant activation tensor. The tile edge is ``tile`` when given,
    else chosen per batch from ``memory_limit`` (bytes for the network's working set) and the
    architecture's measured working memory per input pixel (``bytes_per_pixel``); 0/None = never.
    Tiles are exact: the network's image-level statistics (attention vectors, global priors)
    are computed once on the whole frame (``backend.context``, itself in tiles where the model
    supports it) and every tile runs with them fixed (``backend.run_with_context``).
    """

    #: The networks are trained on HDR10 grades with SDR reference white at 203 cd/m² (BT.2408);
    #: the chain scales their output for another ``sdr_white`` (:class:`hdrvideo.stages.ScaleLight`).
    sdr_white = SDR_REFERENCE_WHITE_NITS
    #: Unbounded output: the chain always rolls it off to the mastering peak.
    max_nits = PQ_MAX_NITS
    MIN_TILE = 64

    def __init__(self, backend: Backend, scale: int, tile: int = 0, overlap: int = 16, description: str = "",
                 temporal: TemporalContext | None = None, memory_limit: int | None = None,
                 bytes_per_pixel: int = 0) -> None:
        self.backend = backend
        self.scale = int(scale)
        self.tile = int(tile)
        self.overlap = int(overlap)
        self.device = backend.device
        self.description = description
        self.temporal = temporal
        self.memory_limit = memory_limit
        self.bytes_per_pixel = int(bytes_per_pixel)

    def tile_for(self, n: int, h: int, w: int) -> int:
        """The tile edge (input pixels) for a batch of n frames of h×w; 0 = the whole frame."""
        if self.tile:
            return self.tile if (h > self.tile or w > self.tile) else 0
        if not self.memory_limit or not self.bytes_per_pixel:
            return 0
        if self.bytes_per_pixel * n * h * w <= self.memory_limit:
            return 0
        edge = int(math.sqrt(self.memory_limit / (self.bytes_per_pixel * n)))
        edge = max(self.MIN_TILE, max(edge // 16 * 16, 2 * self.overlap + 16))
        return edge if (h > edge or w > edge) else 0

    @torch.inference_mode()
    def process(self, frames) -> Tensor:
        """A batch of consecutive frames (:class:`hdrvideo.stages.Frames`) in stream order.

        With temporal smoothing, the network's image-level statistics of each frame are
        computed (``backend.context``), smoothed over the shot (:class:`TemporalContext`,
        restarted at ``frames.cut``, following fades by ``frames.fade``), and the network runs with them fixed
        (``backend.run_with_context``, tiled or not). Without it, as :meth:`__call__`.
        """
        if self.temporal is None:
            return self(frames.rgb)
        rgb = frames.rgb
        tile = self.tile_for(*rgb.shape[:1], *rgb.shape[-2:])
        ctx = self.backend.context(rgb, tile)
        if ctx is None:
            return self(rgb)
        ctx = self.temporal(ctx, frames.cut, frames.fade)
        return self.backend.run_with_context(rgb, ctx, tile, self.overlap).clamp_(0.0, 1.0)

    @torch.inference_mode()
    def __call__(self, rgb: Tensor) -> Tensor:
        """Every frame on its own (exact whole-frame statistics, tiled within the budget)."""
        tile = self.tile_for(*rgb.shape[:1], *rgb.shape[-2:])
        if not tile:
            return self.backend.run(rgb).clamp_(0.0, 1.0)
        ctx = self.backend.context(rgb, tile)
        return self.backend.run_with_context(rgb, ctx, tile, self.overlap).clamp_(0.0, 1.0)
