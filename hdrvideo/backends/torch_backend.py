"""Eager PyTorch backend: the reference. On CUDA it runs FP16 with channels_last."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Context, tile_margin


class TorchBackend:
    name = "torch"

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", fp16: bool | None = None) -> None:
        self.device = torch.device(device)
        self.fp16 = (self.device.type == "cuda") if fp16 is None else fp16
        model = model.eval().to(self.device)
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        if self.fp16:
            model = model.half()
        self.model = model

    def _prepare(self, x: Tensor) -> Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.fp16:
            x = x.half()
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @torch.inference_mode()
    def run(self, x: Tensor) -> Tensor:
        return self.model(self._prepare(x)).to(x.dtype)

    @torch.inference_mode()
    def context(self, x: Tensor) -> Context:
        """The model's image-level statistics of each frame (``model.global_context``)."""
        return self.model.global_context(self._prepare(x))

    @torch.inference_mode()
    def run_with_context(self, x: Tensor, context: Context, tile: int = 0, overlap: int = 16) -> Tensor:
        """The model with fixed statistics, on the whole frame or in blended tiles."""
        from ..processors.tiling import tiled_forward

        xp = self._prepare(x)
        if context is not None:
            context = tuple(c.to(self.device, xp.dtype) for c in context)

        def fn(t: Tensor) -> Tensor:
            return self.model(t, context=context)

        h, w = x.shape[-2:]
        if not tile or (h <= tile and w <= tile):
            return fn(xp).to(x.dtype)
        return tiled_forward(fn, xp, self.model.scale, tile, overlap, margin=tile_margin(self.model, overlap)).to(x.dtype)

    def run_tiled(self, x: Tensor, tile: int, overlap: int) -> Tensor:
        """Tiles with the model's global statistics computed once on the whole frame."""
        return self.run_with_context(x, self.context(x), tile, overlap)
