"""Eager PyTorch backend: the reference. On CUDA it runs FP16 with channels_last."""

from __future__ import annotations

import torch
from torch import Tensor, nn


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
    def run_tiled(self, x: Tensor, tile: int, overlap: int) -> Tensor:
        """Tiles with the model's global statistics computed once on the whole frame."""
        from ..processors.tiling import tiled_model_forward

        return tiled_model_forward(self.model, self._prepare(x), tile, overlap).to(x.dtype)
