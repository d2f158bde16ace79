"""The one interface every inference backend implements."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: importing the backends package must not load torch
    import torch
    from torch import Tensor


Context = Optional[tuple["Tensor", ...]]


@runtime_checkable
class Backend(Protocol):
    """Runs one network: (N,3,H,W) float → (N,3,sH,sW) float, on ``device``.

    ``run`` is the whole network in one graph. Networks with image-level statistics (see
    :mod:`hdrvideo.models.base`) are also run in two parts: ``context`` computes the statistics
    of each frame of a batch (a tuple of tensors with the batch as their first axis, or ``None``
    for a network without any), and ``run_with_context`` runs the network with given statistics,
    on the whole frame or in tiles of ``tile`` input pixels (0 = whole frame); ``context`` with
    ``tile`` > 0 may bound its working memory the same way (same result). The pipeline uses
    the two parts to smooth the statistics over time and to tile exactly.
    ``run_with_context(x, context(x), tile)`` equals ``run(x)`` up to float rounding.
    """

    name: str
    device: torch.device

    def run(self, x: Tensor) -> Tensor: ...

    def context(self, x: Tensor, tile: int = 0) -> Context: ...

    def run_with_context(self, x: Tensor, context: Context, tile: int = 0, overlap: int = 16) -> Tensor: ...


def tile_margin(model, overlap: int) -> float | None:
    """The blend margin of :func:`~hdrvideo.processors.tiling.tiled_forward` for a model: its
    receptive radius, capped below overlap/2, so the blend is seam-exact."""
    if overlap <= 0:
        return None
    radius = float(getattr(model, "receptive_radius", overlap / 4))
    return max(0.0, min(radius, overlap / 2 - 1.0))


def whole_or_tiled(fn, x: Tensor, model, tile: int, overlap: int) -> Tensor:
    """``fn`` (a graph with fixed statistics) on the whole frame, or on blended tiles of
    ``tile`` input pixels when the frame is larger (:func:`~hdrvideo.processors.tiling.tiled_forward`)."""
    h, w = x.shape[-2:]
    if not tile or (h <= tile and w <= tile):
        return fn(x)
    from ..processors.tiling import tiled_forward

    return tiled_forward(fn, x, int(getattr(model, "scale", 1)), tile, overlap, margin=tile_margin(model, overlap))


class TwoPartRunner:
    """``run_tiled`` of a backend with ``context`` and ``run_with_context``: exact tiles, the
    statistics computed once on the whole frame."""

    def run_tiled(self, x: Tensor, tile: int, overlap: int) -> Tensor:
        h, w = x.shape[-2:]
        if h <= tile and w <= tile:
            return self.run(x)
        return self.run_with_context(x, self.context(x), tile, overlap)
