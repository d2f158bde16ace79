"""Classical, weight-free SDR→HDR10 processors."""

from __future__ import annotations

import torch
from torch import Tensor

from ..colour import SDR_REFERENCE_WHITE_NITS, bt2408_sdr_to_pq_lut, hdr_expand_sdr_to_pq
from .resample import resize_lanczos


class BT2408Processor:
    """ITU-R BT.2408-7 §5.1.1 display-light mapping, with Lanczos-3 upscaling when scale > 1.

    The upscale happens on the SDR signal before the mapping (the same order a neural
    SR-ITM network works in), and the result is clipped to the legal [0,1] range. The mapping
    runs through lookup tables (:func:`hdrvideo.colour.bt2408_sdr_to_pq_lut`, within 0.02 of a
    10-bit code of the exact :func:`~hdrvideo.colour.bt2408_sdr_to_pq`).
    """

    def __init__(
        self, scale: int = 1, sdr_white: float = SDR_REFERENCE_WHITE_NITS, device: str | torch.device = "cpu"
    ) -> None:
        self.scale = int(scale)
        self.sdr_white = float(sdr_white)
        self.device = torch.device(device)
        # in-gamut BT.709 maps into [0, sdr_white] cd/m² per BT.2020 component (the BT.2087
        # matrix's rows are non-negative and sum to 1), so no roll-off stage is needed below it
        self.max_nits = self.sdr_white
        # on a CPU: memory-bound elementwise work; one torch thread, the other cores go to x265
        self.cpu_threads = 1
        self.description = f"BT.2408 display-light mapping, SDR white {self.sdr_white:g} cd/m²" + (
            f", Lanczos-3 ×{self.scale}" if self.scale > 1 else ""
        )

    @torch.inference_mode()
    def __call__(self, rgb: Tensor) -> Tensor:
        if self.scale > 1:
            h, w = rgb.shape[-2:]
            rgb = resize_lanczos(rgb, h * self.scale, w * self.scale)
        return bt2408_sdr_to_pq_lut(rgb, self.sdr_white)  # the tables clamp the input to [0, 1]


class HdrExpandProcessor:
    """Highlight expansion (:func:`hdrvideo.colour.hdr_expand_sdr_to_pq`): BT.2408 up to the knee,
    the inverse of BT.2446 Method C's curve above it, SDR white at ``peak``; on luminance, so hue
    is kept. Lanczos-3 upscaling on the SDR signal first when scale > 1.

    ``max_nits`` = ``peak``: no output exceeds it, so the chain's roll-off only takes the encoder
    headroom off the top.
    """

    def __init__(
        self,
        scale: int = 1,
        sdr_white: float = SDR_REFERENCE_WHITE_NITS,
        peak: float = 1000.0,
        knee: float = 0.8,
        saturation: float = 0.5,
        device: str | torch.device = "cpu",
    ) -> None:
        self.scale = int(scale)
        self.sdr_white = float(sdr_white)
        self.peak = float(peak)
        self.knee = float(knee)
        self.saturation = float(saturation)
        self.max_nits = max(self.peak, self.sdr_white)
        self.device = torch.device(device)
        self.description = (
            f"highlight expansion (inverse BT.2446-C), SDR white {self.sdr_white:g} → peak {self.peak:g} cd/m², "
            f"knee {self.knee:g}, saturation {self.saturation:g}" + (f", Lanczos-3 ×{self.scale}" if self.scale > 1 else "")
        )

    @torch.inference_mode()
    def __call__(self, rgb: Tensor) -> Tensor:
        if self.scale > 1:
            h, w = rgb.shape[-2:]
            rgb = resize_lanczos(rgb, h * self.scale, w * self.scale)
        return hdr_expand_sdr_to_pq(rgb.clamp(0.0, 1.0), self.sdr_white, self.peak, self.knee, self.saturation)
