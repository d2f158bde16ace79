"""Classical, weight-free SDR→HDR10 processors."""

from __future__ import annotations

import torch
from torch import Tensor

from ..colour import SDR_REFERENCE_WHITE_NITS, bt2408_sdr_to_pq
from .resample import resize_lanczos


class BT2408Processor:
    """ITU-R BT.2408-7 §5.1.1 display-light mapping, with Lanczos-3 upscaling when scale > 1.

    The upscale happens on the SDR signal before the mapping (the same order a neural
    SR-ITM network works in), and the result is clipped to the legal [0,1] range.
    """

    def __init__(
        self, scale: int = 1, sdr_white: float = SDR_REFERENCE_WHITE_NITS, device: str | torch.device = "cpu"
    ) -> None:
        self.scale = int(scale)
        self.sdr_white = float(sdr_white)
        self.device = torch.device(device)
        self.description = f"BT.2408 display-light mapping, SDR white {self.sdr_white:g} cd/m²" + (
            f", Lanczos-3 ×{self.scale}" if self.scale > 1 else ""
        )

    @torch.inference_mode()
    def __call__(self, rgb: Tensor) -> Tensor:
        if self.scale > 1:
            h, w = rgb.shape[-2:]
            rgb = resize_lanczos(rgb, h * self.scale, w * self.scale)
        return bt2408_sdr_to_pq(rgb.clamp(0.0, 1.0), self.sdr_white)
