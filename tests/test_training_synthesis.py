"""Synthetic SDR/HDR10 pairs: grade invariants, SDR renditions, degradations, cache, scene split."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hdrvideo import colour as C
from hdrvideo.training import synthesis as S
from hdrvideo.training.datasets import FolderPairs, SynthPairs, augment, open_pairs, sample_batch
from hdrvideo.training.imageio import read_png, read_rgbe, write_png

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PHOTOS = SHARED / "data" / "hdr-photos" / "polyhaven"


def write_rgbe_flat(path: Path, rgb: np.ndarray) -> None:
    """Minimal flat (uncompressed) Radiance writer for test panoramas."""
    h, w, _ = rgb.shape
    m = rgb.max(axis=2)
    e = np.where(m > 1e-32, np.floor(np.log2(np.maximum(m, 1e-32))) + 1, -128)
    scale = np.where(m > 1e-32, 256.0 / np.exp2(e), 0.0)
    mant = np.clip(np.floor(rgb * scale[..., None]), 0, 255).astype(np.uint8)
    ex = np.where(m > 1e-32, e + 128, 0).astype(np.uint8)
    body = np.concatenate([mant, ex[..., None]], axis=2).tobytes()
    path.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n" + f"-Y {h} +X {w}\n".encode() + body)


def fake_panorama(seed: int, h=64, w=128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.exp(rng.normal(-2.0, 1.0, (h // 8, w // 8, 3))).repeat(8, 0).repeat(8, 1)
    base[h // 2 - 2 : h // 2 + 2, 10:14] = 500.0  # a light source
    return (base * (1 + 0.1 * rng.random((h, w, 3)))).astype(np.float32)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    for i, name in enumerate(["alpha", "bravo", "charlie", "delta"]):
        write_rgbe_flat(d / f"{name}_1k.hdr", fake_panorama(i))
    return d


def test_rgbe_reader_roundtrip(photos):
    x = read_rgbe(photos / "alpha_1k.hdr")
    ref = fake_panorama(0)
    assert x.shape == ref.shape and x.dtype == np.float32
    # RGBE: one shared exponent, 8-bit mantissas → error ≤ 1% of the pixel's largest component
    assert (np.abs(x - ref) <= 0.01 * ref.max(axis=2, keepdims=True) + 1e-12).all()


def test_png_roundtrip(tmp_path):
    a8 = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    a16 = np.random.default_rng(1).integers(0, 65536, (6, 10, 3), dtype=np.uint16)
    write_png(tmp_path / "a.png", a8)
    write_png(tmp_path / "b.png", a16)
    assert np.array_equal(read_png(tmp_path / "a.png"), a8)
    b = read_png(tmp_path / "b.png")
    assert b.dtype == np.uint16 and np.array_equal(b, a16)


def test_hdr10_grade_invariants():
    x = torch.from_numpy(fake_panorama(3).transpose(2, 0, 1).copy()) * 1000.0
    g = S.hdr10_grade(x, key_nits=25.0)
    assert g.min().item() >= 0.0 and g.max().item() <= 1000.0 + 1e-6
    pq = C.pq_encode(g)
    assert pq.min().item() >= 0.0 and pq.max().item() <= C.pq_encode(torch.tensor(1000.0)).item() + 1e-6
    # exposure normalisation: the log-average luminance of the (un-rolled-off) grade is the key
    dim = torch.from_numpy(fake_panorama(3).transpose(2, 0, 1).copy()).clamp(max=1.0)
    g2 = S.hdr10_grade(dim, key_nits=20.0)
    assert S.log_average_luminance(C.bt2020_to_bt709(g2)) == pytest.approx(20.0, rel=1e-3)


@pytest.mark.parametrize("method", S.SDR_METHODS)
def test_sdr_rendition_range_and_monotonic(method):
    rng = np.random.default_rng(0)
    r = S.draw_sdr_recipe(rng, method)
    ramp = torch.linspace(0, 1000, 501, dtype=torch.float64).view(1, 1, -1).expand(3, 1, -1)
    s = S.sdr_rendition(ramp, r)
    assert s.min().item() >= 0.0 and s.max().item() <= 1.0
    assert (s[1, 0].diff() >= -1e-7).all()
    q = S.quantize(s, 8)
    assert q.dtype == torch.uint8


def test_bicubic_downscale_and_h264():
    x = torch.full((2, 3, 16, 24), 0.4)
    y = S.bicubic_downscale(x, 4)
    assert y.shape == (2, 3, 4, 6) and torch.allclose(y, torch.full_like(y, 0.4), atol=1e-6)
    with pytest.raises(ValueError):
        S.bicubic_downscale(torch.rand(3, 10, 10), 4)
    ramp = torch.linspace(0.1, 0.9, 32).view(1, 1, 1, 32).expand(3, 3, 32, 32).contiguous()
    out = S.h264_round_trip(ramp, crf=18)
    assert out.shape == ramp.shape and (out - ramp).abs().mean().item() < 0.01


def test_scene_split_is_disjoint():
    names = [f"s{i}" for i in range(20)] + ["venice_sunset", "thatch_chapel"]
    train, test = S.split_scenes(names)
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(names)
    assert test == ["thatch_chapel", "venice_sunset"]
    train2, test2 = S.split_scenes([f"s{i}" for i in range(20)], n_test=5)
    assert len(test2) == 5 and set(train2).isdisjoint(test2)


def test_build_synthetic_set_invariants(photos, tmp_path):
    base = dict(views_per_scene=2, height=32, width=32, variants=2, h264_prob=1.0, clip_len=4,
                test_scenes=("charlie",), seed=3)
    tr = S.build_synthetic_set(photos, tmp_path / "train", S.SynthConfig(split="train", **base))
    te = S.build_synthetic_set(photos, tmp_path / "test", S.SynthConfig(split="test", **base))
    mtr, mte = (json.loads((d / "meta.json").read_text()) for d in (tr, te))
    assert set(mtr["scenes"]).isdisjoint(mte["scenes"]) and mte["scenes"] == ["charlie"]
    assert {v["scene"] for v in mtr["views"]} == {"alpha", "bravo", "delta"}
    hdr = np.load(tr / "hdr.npy")
    assert hdr.dtype == np.uint16 and hdr.shape == (6, 3, 32, 32)
    nits = C.pq_decode(torch.from_numpy(hdr.astype(np.float64) / 65535))
    assert nits.max().item() <= 1000.0 * 1.001  # 16-bit PQ code rounding
    for s in (1, 2, 4):
        sdr = np.load(tr / f"sdr_x{s}.npy")
        assert sdr.dtype == np.uint8 and sdr.shape == (6, 2, 3, 32 // s, 32 // s)
    assert all(c >= 18 for v in mtr["views"] for c in v["crf"]["x1"])  # every clip went through H.264
    # cached: a second call with the same config does not rebuild
    mtime = (tr / "hdr.npy").stat().st_mtime_ns
    S.build_synthetic_set(photos, tr, S.SynthConfig(split="train", **base))
    assert (tr / "hdr.npy").stat().st_mtime_ns == mtime
    # datasets: batches are aligned ×s and deterministic in (seed, step)
    src = SynthPairs(tr, 4)
    x, y = sample_batch(src, step=5, batch=3, patch=4, seed=1)
    assert x.shape == (3, 3, 4, 4) and y.shape == (3, 3, 16, 16)
    x2, y2 = sample_batch(src, step=5, batch=3, patch=4, seed=1)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    # PNG export in the HDRTV1K layout reads back identically through FolderPairs
    S.export_png(te, tmp_path / "png")
    for s in (1, 2, 4):
        fp = open_pairs(tmp_path / "png", "test", s)
        assert isinstance(fp, FolderPairs) and len(fp) == 2
        sp = SynthPairs(te, s)
        a, b = fp.get(0), sp.get(0)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_folder_pairs_bicubic_fallback(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "train_sdr").mkdir()
    (tmp_path / "train_hdr").mkdir()
    write_png(tmp_path / "train_sdr" / "f1.png", rng.integers(0, 256, (16, 20, 3), dtype=np.uint8))
    write_png(tmp_path / "train_hdr" / "f1.png", rng.integers(0, 65536, (16, 20, 3), dtype=np.uint16))
    fp = FolderPairs(tmp_path, "train", scale=4)
    sdr, hdr = fp.get(0)
    assert sdr.shape == (3, 4, 5) and hdr.shape == (3, 16, 20) and sdr.dtype == torch.uint8


def test_augment_is_dihedral():
    x = torch.arange(12.0).view(1, 3, 4)
    outs = {tuple(augment(x, c).flatten().tolist()) for c in range(8)}
    assert len(outs) == 8


@pytest.mark.skipif(not PHOTOS.is_dir(), reason="../shared HDR photographs not present")
def test_shared_photos_reader_and_split():
    av = pytest.importorskip("av")
    scenes = S.list_scenes(PHOTOS)
    train, test = S.split_scenes(list(scenes))
    assert set(test) == set(S.DEFAULT_TEST_SCENES) and set(train).isdisjoint(test)
    p = scenes["venice_sunset"]
    x = read_rgbe(p)
    with av.open(str(p)) as c:
        ref = next(c.decode(video=0)).to_ndarray(format="gbrpf32le")
    assert x.shape == (512, 1024, 3)
    # FFmpeg decodes m·2^(e-136), Radiance (m+½)·2^(e-136): within 1% of the pixel's maximum
    assert (np.abs(x - ref) <= 0.01 * ref.max(axis=2, keepdims=True) + 1e-12).all()
