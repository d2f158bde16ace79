"""IRNet: lightweight improved residual network for efficient inverse tone mapping.

Paper: "Lightweight Improved Residual Network for Efficient Inverse Tone Mapping"
(Xue, Xu, Yu, He et al., 2023, arXiv:2307.03998).

The layer layout (module names, shapes, order of operations) follows the official
implementation so that a checkpoint with its key names loads with ``strict=True``; where the
paper text and the official code differ, the official layout wins:

* Improved residual block ``IRBk`` (C channels, d = C/2):
  F1 = LReLU(conv3×3_{C→d}(x)) [``distill_1.conv3_1``];
  r = x + conv3×3_{d→C}(F1) [``mid_1``];  F2 = conv1×1_{C→d}(r) [``distill_2``];
  u = conv1×1_{C→C}(concat[F1, F2]) [``conv``];  out = x + CCA(u) [``esa``].
* CCA (contrast-aware channel attention): y = mean_c + std_c (population std written as
  sqrt(mean((x-m)²)), ONNX-friendly), conv1×1 C→C/16, ReLU, conv1×1 C/16→C, sigmoid; out = u·y.
* Network: ``fea_conv`` 1×1 3→C (head h); blocks chained; ``c`` = LReLU(conv1×1 over the concat
  of all block outputs); ``LR_conv`` 3×3 plus the global residual h; tail:

  - ×1: ``upsampler`` conv3×3 C→3 (the name is upstream's; it does not upsample);
  - ×2 (ours, no upstream): ``conv3_layer`` conv3×3, ``upsampler`` = [conv3×3 C→12, PixelShuffle 2];
  - ×4: ``conv3_layer`` conv3×3, ``upsampler1`` = [conv3×3 C→4C, PS 2], ``upsampler2`` =
    [conv3×3 C→12, PS 2].  No activation, no bicubic skip.

* LeakyReLU slope 0.05 everywhere; all convolutions have a bias.

Upstream checkpoints work in OpenCV float YCrCb (BT.601): create the model with
``colour_domain="ycrcb601"`` for them.  Our own weights use R'G'B' (the default).

Global context: the CCA attention vector of each block.  ``compute_context`` runs the head and
the blocks once on the whole frame and returns those vectors, so tiles can reuse them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Context, ITMModel, as_dtype, check_context, conv, map_local_tiled, mean_std, param_dtype

LRELU_SLOPE = 0.05


class _ConvAct(nn.Module):
    """conv3×3 followed by LeakyReLU(0.05); the conv is named ``conv3_1`` as upstream."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv3_1 = conv(cin, cout, 3)
        self.act = nn.LeakyReLU(LRELU_SLOPE)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv3_1(x))


class CCALayer(nn.Module):
    """Contrast-aware channel attention (named ``esa`` upstream)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def attention(self, x: Tensor) -> Tensor:
        """The attention vector, in the MLP's precision (FP32 under mixed precision)."""
        m, s = mean_std(as_dtype(x, param_dtype(self.conv_du)))
        return self.conv_du(s + m)

    def forward(self, x: Tensor, att: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if att is None:
            att = self.attention(x)
        return x * as_dtype(att, x.dtype), att


class IRB(nn.Module):
    """Improved residual block; returns (output, attention vector used)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        d = channels // 2
        self.distill_1 = _ConvAct(channels, d)
        self.mid_1 = conv(d, channels, 3)
        self.distill_2 = conv(channels, d, 1)
        self.conv = conv(channels, channels, 1)
        self.esa = CCALayer(channels)

    def forward(self, x: Tensor, att: Tensor | None = None) -> tuple[Tensor, Tensor]:
        f1 = self.distill_1(x)
        r = x + self.mid_1(f1)
        f2 = self.distill_2(r)
        u, att = self.esa(self.conv(torch.cat([f1, f2], dim=1)), att)
        return x + u, att


class IRNet(ITMModel):
    """IRNet with ``n_blocks`` IRBs of ``channels`` channels; ``scale`` in {1, 2, 4}."""

    def __init__(self, n_blocks: int = 2, channels: int = 64, scale: int = 1, **kwargs) -> None:
        if scale not in (1, 2, 4):
            raise ValueError(f"IRNet supports scale 1, 2 or 4, not {scale}")
        super().__init__(scale, **kwargs)
        self.n_blocks = n_blocks
        c = channels
        self.fea_conv = conv(3, c, 1)
        for i in range(n_blocks):
            self.add_module(f"IRB{i + 1}", IRB(c))
        self.c = nn.Sequential(conv(n_blocks * c, c, 1), nn.LeakyReLU(LRELU_SLOPE))
        self.LR_conv = conv(c, c, 3)
        if scale == 1:
            self.upsampler = conv(c, 3, 3)
        elif scale == 2:
            self.conv3_layer = conv(c, c, 3)
            self.upsampler = nn.Sequential(conv(c, 12, 3), nn.PixelShuffle(2))
        else:
            self.conv3_layer = conv(c, c, 3)
            self.upsampler1 = nn.Sequential(conv(c, 4 * c, 3), nn.PixelShuffle(2))
            self.upsampler2 = nn.Sequential(conv(c, 12, 3), nn.PixelShuffle(2))
        # 2 px per block (two 3×3 convs), LR_conv, conv3_layer / first tail conv, last tail conv
        self.receptive_radius = 2 * n_blocks + 1 + (1 if scale == 1 else 3)

    @property
    def blocks(self) -> list[IRB]:
        return [getattr(self, f"IRB{i + 1}") for i in range(self.n_blocks)]

    def _trunk(self, x: Tensor, context: Context) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        h = self.fea_conv(x)
        out, outs, atts = h, [], []
        for i, block in enumerate(self.blocks):
            out, att = block(out, None if context is None else context[i])
            outs.append(out)
            atts.append(att)
        return h, outs, atts

    def compute_context(self, x: Tensor) -> Context:
        # the head and the blocks, keeping only the running features (not every block's output
        # as forward_net must for its concat): about half the peak memory on a whole frame
        out = self.fea_conv(x)
        atts = []
        for block in self.blocks:
            out, att = block(out, None)
            atts.append(att)
        return tuple(atts)

    def compute_context_tiled(self, x: Tensor, tile: int) -> Context:
        """The same attention vectors with each block's local layers run in tiles.

        Per block: u (the features the attention weighs) is computed tile by tile with a 2-pixel
        halo (:func:`map_local_tiled`, exact), its per-channel mean and population std are
        accumulated over the whole frame in float64, and the block output x + u·att replaces x.
        Only x and u are held at full size (2×C channels) instead of every intermediate and
        convolution workspace of the whole frame.
        """
        out = self.fea_conv(x)
        atts = []
        h, w = out.shape[-2:]
        for block in self.blocks:
            def local(t: Tensor, b: IRB = block) -> Tensor:
                f1 = b.distill_1(t)
                return b.conv(torch.cat([f1, b.distill_2(t + b.mid_1(f1))], dim=1))

            u = torch.empty_like(out)
            s1 = torch.zeros(out.shape[:2], dtype=torch.float64, device=out.device)
            s2 = torch.zeros_like(s1)

            def keep(region: tuple[slice, slice], part: Tensor) -> None:
                u[..., region[0], region[1]] = part
                p = part.double()
                s1.add_(p.sum(dim=(2, 3)))
                s2.add_((p * p).sum(dim=(2, 3)))

            map_local_tiled(local, out, 2, tile, keep)
            m = s1 / (h * w)
            std = torch.sqrt(torch.clamp(s2 / (h * w) - m * m, min=1e-12))
            # the statistics modules may stay FP32 while the features are FP16 (as CCALayer does)
            att = block.esa.conv_du((std + m).to(param_dtype(block.esa.conv_du))[:, :, None, None])
            out = out.addcmul_(u, as_dtype(att, u.dtype))
            atts.append(att)
        return tuple(atts)

    def statistics_modules(self) -> list[nn.Module]:
        return [b.esa.conv_du for b in self.blocks]

    def forward_net(self, x: Tensor, context: Context = None) -> Tensor:
        check_context(context, self.n_blocks, "IRNet")
        h, outs, _ = self._trunk(x, context)
        cat = outs[0] if self.n_blocks == 1 else torch.cat(outs, dim=1)
        y = self.LR_conv(self.c(cat)) + h
        if self.scale == 1:
            return self.upsampler(y)
        y = self.conv3_layer(y)
        if self.scale == 2:
            return self.upsampler(y)
        return self.upsampler2(self.upsampler1(y))
