"""Paired SDR/HDR10 data for training and evaluation.

Two sources share one interface (:class:`PairSource`):

* :class:`SynthPairs` — a cache built by :func:`hdrvideo.training.synthesis.build_synthetic_set`
  (``hdr.npy``, ``sdr_x{s}.npy``, ``meta.json``), held in memory.
* :class:`FolderPairs` — folders in the HDRTV1K layout: SDR 8-bit PNG (BT.709 R'G'B') and HDR
  16-bit PNG (PQ BT.2020 R'G'B'), matched by file name.  For a split ``train`` or ``test`` the
  first existing pair of folders is used, relative to DIR:
  ``{split}_sdr`` + ``{split}_hdr``, ``{split}ing_set/{split}_sdr`` + ``…/{split}_hdr``,
  ``{split}_set/{split}_sdr`` + ``…/{split}_hdr``, ``{split}/sdr`` + ``{split}/hdr``, and finally
  ``sdr`` + ``hdr``.  Low-resolution inputs for ×s come from a sibling folder
  ``{sdr folder}_x{s}`` when it exists, otherwise from the documented degradation: bicubic
  downscale of the 8-bit SDR (:func:`~hdrvideo.training.synthesis.bicubic_downscale`) and
  re-quantisation to 8 bits.

Batches (:func:`sample_batch`) are a pure function of ``(seed, step)``: random image, variant,
aligned LR/HR crop, and one of the 8 flips/rotations.  So a resumed run sees exactly the batches
an uninterrupted run would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import torch
from torch import Tensor

from .imageio import read_png
from .synthesis import bicubic_downscale, quantize

__all__ = [
    "PairSource",
    "SynthPairs",
    "FolderPairs",
    "find_pair_dirs",
    "open_pairs",
    "sample_batch",
    "augment",
    "iter_eval_pairs",
]

PNG_SUFFIXES = (".png",)


class PairSource(Protocol):
    """A set of (SDR, HDR) images: SDR uint8 (3,h,w) at 1/scale of HDR uint16 (3,H,W)."""

    scale: int

    def __len__(self) -> int: ...

    def variants(self, i: int) -> int: ...

    def get(self, i: int, variant: int = 0) -> tuple[Tensor, Tensor]: ...

    def name(self, i: int) -> str: ...


def _to_float_sdr(x: Tensor) -> Tensor:
    return x.float() / 255.0


def _to_float_hdr(x: Tensor) -> Tensor:
    return x.float() / 65535.0


class SynthPairs:
    """In-memory synthetic set (see :mod:`hdrvideo.training.synthesis`) at one scale."""

    def __init__(self, cache_dir: str | Path, scale: int = 1) -> None:
        d = Path(cache_dir)
        self.meta = json.loads((d / "meta.json").read_text())
        self.scale = int(scale)
        f = d / f"sdr_x{self.scale}.npy"
        if not f.exists():
            raise FileNotFoundError(f"{d} has no ×{self.scale} SDR inputs ({f.name})")
        self.hdr = torch.from_numpy(np.load(d / "hdr.npy").astype(np.int32))  # uint16 → int32
        self.sdr = torch.from_numpy(np.load(f))
        self.scenes = [v["scene"] for v in self.meta["views"]]

    def __len__(self) -> int:
        return self.hdr.shape[0]

    def variants(self, i: int) -> int:
        return self.sdr.shape[1]

    def get(self, i: int, variant: int = 0) -> tuple[Tensor, Tensor]:
        return self.sdr[i, variant], self.hdr[i]

    def name(self, i: int) -> str:
        return f"{self.scenes[i]}_{i:04d}"


def find_pair_dirs(root: str | Path, split: str) -> tuple[Path, Path]:
    """(sdr_dir, hdr_dir) of ``split`` under ``root`` (see the module docstring)."""
    r = Path(root)
    candidates = [
        (r / f"{split}_sdr", r / f"{split}_hdr"),
        (r / f"{split}ing_set" / f"{split}_sdr", r / f"{split}ing_set" / f"{split}_hdr"),
        (r / f"{split}_set" / f"{split}_sdr", r / f"{split}_set" / f"{split}_hdr"),
        (r / split / "sdr", r / split / "hdr"),
        (r / "sdr", r / "hdr"),
    ]
    for sdr, hdr in candidates:
        if sdr.is_dir() and hdr.is_dir():
            return sdr, hdr
    raise FileNotFoundError(
        f"no {split} SDR/HDR folder pair under {r} (looked for {split}_sdr+{split}_hdr, "
        f"{split}ing_set/…, {split}_set/…, {split}/sdr+{split}/hdr, sdr+hdr)"
    )


class FolderPairs:
    """HDRTV1K-layout PNG pairs, matched by file stem; images are read on demand."""

    def __init__(self, root: str | Path, split: str = "train", scale: int = 1, cache: bool = False) -> None:
        self.sdr_dir, self.hdr_dir = find_pair_dirs(root, split)
        self.scale = int(scale)
        lr_dir = self.sdr_dir.parent / f"{self.sdr_dir.name}_x{self.scale}"
        self.lr_dir = lr_dir if self.scale > 1 and lr_dir.is_dir() else None
        sdr = {p.stem: p for p in self.sdr_dir.iterdir() if p.suffix.lower() in PNG_SUFFIXES}
        hdr = {p.stem: p for p in self.hdr_dir.iterdir() if p.suffix.lower() in PNG_SUFFIXES}
        self.names = sorted(set(sdr) & set(hdr))
        if not self.names:
            raise FileNotFoundError(f"no PNG files with matching names in {self.sdr_dir} and {self.hdr_dir}")
        self._sdr, self._hdr = sdr, hdr
        self._cache: dict[int, tuple[Tensor, Tensor]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.names)

    def variants(self, i: int) -> int:
        return 1

    def name(self, i: int) -> str:
        return self.names[i]

    def get(self, i: int, variant: int = 0) -> tuple[Tensor, Tensor]:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        n = self.names[i]
        hdr = read_png(self._hdr[n])
        if hdr.dtype != np.uint16:
            raise ValueError(f"{self._hdr[n]}: HDR must be a 16-bit PNG")
        hdr_t = torch.from_numpy(hdr.astype(np.int32).transpose(2, 0, 1).copy())
        if self.lr_dir is not None and (self.lr_dir / self._sdr[n].name).exists():
            sdr_t = torch.from_numpy(read_png(self.lr_dir / self._sdr[n].name).transpose(2, 0, 1).copy())
        else:
            sdr = read_png(self._sdr[n])
            if sdr.dtype != np.uint8:
                raise ValueError(f"{self._sdr[n]}: SDR must be an 8-bit PNG")
            sdr_t = torch.from_numpy(sdr.transpose(2, 0, 1).copy())
            if self.scale > 1:
                s = self.scale
                h, w = sdr_t.shape[-2:]
                h, w = h - h % s, w - w % s
                sdr_t = quantize(bicubic_downscale(_to_float_sdr(sdr_t[:, :h, :w]), s), 8)
        s = self.scale
        h, w = sdr_t.shape[-2:]
        hdr_t = hdr_t[:, : h * s, : w * s]
        if hdr_t.shape[-2:] != (h * s, w * s):
            raise ValueError(f"{n}: HDR {tuple(hdr_t.shape[-2:])} does not match SDR {(h, w)} at ×{s}")
        if self._cache is not None:
            self._cache[i] = (sdr_t, hdr_t)
        return sdr_t, hdr_t


class ConcatPairs:
    """Several sources as one (their images one after the other)."""

    def __init__(self, sources: list[PairSource]) -> None:
        scales = {s.scale for s in sources}
        if len(scales) != 1:
            raise ValueError("sources of different scales cannot be combined")
        self.sources = sources
        self.scale = scales.pop()
        self._starts = np.cumsum([0] + [len(s) for s in sources])

    def _locate(self, i: int) -> tuple[PairSource, int]:
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self.sources[k], i - int(self._starts[k])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def variants(self, i: int) -> int:
        s, j = self._locate(i)
        return s.variants(j)

    def get(self, i: int, variant: int = 0) -> tuple[Tensor, Tensor]:
        s, j = self._locate(i)
        return s.get(j, variant)

    def name(self, i: int) -> str:
        s, j = self._locate(i)
        return s.name(j)


def open_pairs(data: str | Path, split: str, scale: int) -> PairSource:
    """A synthetic cache directory (has ``meta.json``) or an HDRTV1K-layout folder; several,
    joined with ``os.pathsep`` (``:``), are used together."""
    import os

    if os.pathsep in str(data):
        return ConcatPairs([open_pairs(part, split, scale) for part in str(data).split(os.pathsep) if part])
    d = Path(data)
    if (d / "meta.json").exists() and (d / "hdr.npy").exists():
        return SynthPairs(d, scale)
    return FolderPairs(d, split, scale)


def augment(x: Tensor, code: int) -> Tensor:
    """One of the 8 dihedral transforms (code 0–7: bit 0 h-flip, bits 1–2 rot90 count)."""
    if code & 1:
        x = x.flip(-1)
    k = (code >> 1) & 3
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def sample_batch(
    source: PairSource, step: int, batch: int, patch: int, seed: int = 0, augment_data: bool = True,
    film=None,
) -> tuple[Tensor, Tensor]:
    """Batch ``step`` of a run: (SDR (B,3,p,p) float [0,1], HDR (B,3,sp,sp) float [0,1]).

    ``patch`` is the LR (input) patch size; a pure function of ``(seed, step)``. ``film``: a
    :class:`~hdrvideo.training.film.FilmAugment` (fades, black, bars, grain) applied per sample;
    then the inputs whose image statistics the network is to use and the inputs with a second
    grain draw are returned too.
    """
    rng = np.random.default_rng([int(seed), int(step), 7919])
    s = source.scale
    xs, ys, cs, x2s = [], [], [], []
    for _ in range(batch):
        i = int(rng.integers(len(source)))
        k = int(rng.integers(source.variants(i)))
        sdr, hdr = source.get(i, k)
        h, w = sdr.shape[-2:]
        if h < patch or w < patch:
            raise ValueError(f"image {source.name(i)} ({w}×{h}) is smaller than the patch {patch}")
        top, left = int(rng.integers(h - patch + 1)), int(rng.integers(w - patch + 1))
        code = int(rng.integers(8)) if augment_data else 0
        x = _to_float_sdr(augment(sdr[:, top : top + patch, left : left + patch], code))
        y = _to_float_hdr(augment(hdr[:, top * s : (top + patch) * s, left * s : (left + patch) * s], code))
        if film is not None:
            from .film import film_augment

            x, y, c, x2 = film_augment(x, y, s, rng, film)
            cs.append(c)
            x2s.append(x2)
        xs.append(x)
        ys.append(y)
    if film is not None:
        return torch.stack(xs), torch.stack(ys), torch.stack(cs), torch.stack(x2s)
    return torch.stack(xs), torch.stack(ys)


def iter_eval_pairs(source: PairSource, limit: int | None = None) -> Iterator[tuple[str, Tensor, Tensor]]:
    """(name, SDR (1,3,h,w) float, HDR (1,3,sh,sw) float) of every image (variant 0)."""
    n = len(source) if limit is None else min(limit, len(source))
    for i in range(n):
        sdr, hdr = source.get(i, 0)
        yield source.name(i), _to_float_sdr(sdr)[None], _to_float_hdr(hdr)[None]
