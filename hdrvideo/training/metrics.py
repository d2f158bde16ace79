"""Image-quality metrics for SDR→HDR10 results, on PQ BT.2020 R'G'B' in [0, 1].

* :func:`psnr` — over all three channels of the PQ signal, peak 1 (as HDRTVNet reports it).
* :func:`ssim` — Wang et al. 2004 (Gaussian window 11, σ 1.5, K1 0.01, K2 0.03, L = 1, valid
  region), per channel, averaged over R', G', B'.
* :func:`delta_e_itp` — ITU-R BT.2124-0: PQ EOTF → linear BT.2020 cd/m² → ICtCp (BT.2100) →
  720·√(ΔI² + 0.25·ΔCt² + ΔCp²), mean over pixels.

Every function takes (N,3,H,W) (or (3,H,W)) tensors and returns one value per image (N,).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import colour

__all__ = ["psnr", "ssim", "delta_e_itp", "image_metrics", "METRIC_NAMES"]

METRIC_NAMES = ("psnr", "ssim", "delta_e_itp")


def _batch(x: Tensor) -> Tensor:
    return x[None] if x.dim() == 3 else x


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """10·log10(range² / MSE) per image, MSE over all channels and pixels (inf when equal)."""
    p, t = _batch(pred).double(), _batch(target).double()
    mse = ((p - t) ** 2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_1d(size: int, sigma: float, dtype, device) -> Tensor:
    ax = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    return g / g.sum()


def _band(size: int, g: Tensor) -> Tensor:
    """(size, size-k+1) matrix whose column j holds the kernel at rows j…j+k-1 (valid correlation)."""
    k = g.numel()
    m = torch.zeros(size, size - k + 1, dtype=g.dtype, device=g.device)
    for i in range(k):
        m.diagonal(-i).copy_(g[i].expand(size - k + 1))
    return m


def ssim(pred: Tensor, target: Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM per image (channels averaged), valid-region Gaussian statistics.

    The 2-D Gaussian window is separable, so the local moments are two 1-D passes.
    """
    p, t = _batch(pred).double(), _batch(target).double()
    n, c, h, w = p.shape
    if h < window or w < window:
        raise ValueError(f"SSIM needs images of at least {window}×{window}")
    g = _gaussian_1d(window, sigma, p.dtype, p.device)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    # the five moments of every channel in one grouped pass
    stack = torch.cat((p, t, p * p, t * t, p * t), dim=1)
    # valid-mode filtering along W and H as products with banded matrices (fast BLAS path)
    f = _band(h, g).T @ (stack @ _band(w, g))
    f = f.reshape(n, 5, c, h - window + 1, w - window + 1)
    mu_p, mu_t, e_pp, e_tt, e_pt = f.unbind(1)
    s_pp = e_pp - mu_p**2
    s_tt = e_tt - mu_t**2
    s_pt = e_pt - mu_p * mu_t
    m = ((2 * mu_p * mu_t + c1) * (2 * s_pt + c2)) / ((mu_p**2 + mu_t**2 + c1) * (s_pp + s_tt + c2))
    return m.flatten(2).mean(2).mean(1)


def delta_e_itp(pred_pq: Tensor, target_pq: Tensor) -> Tensor:
    """Mean ΔE_ITP (ITU-R BT.2124-0) per image between two PQ BT.2020 R'G'B' images."""
    p, t = _batch(pred_pq).double().clamp(0.0, 1.0), _batch(target_pq).double().clamp(0.0, 1.0)
    ip = colour.bt2020_to_ictcp(colour.pq_decode(p))
    it = colour.bt2020_to_ictcp(colour.pq_decode(t))
    return colour.delta_e_itp(ip, it).flatten(1).mean(1)


def image_metrics(pred_pq: Tensor, target_pq: Tensor) -> dict[str, Tensor]:
    """All of :data:`METRIC_NAMES` per image; ``pred`` is clamped to [0, 1] first."""
    p = pred_pq.clamp(0.0, 1.0)
    return {"psnr": psnr(p, target_pq), "ssim": ssim(p, target_pq), "delta_e_itp": delta_e_itp(p, target_pq)}
