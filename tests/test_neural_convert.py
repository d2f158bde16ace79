"""Neural presets end to end through `hdrvideo convert`, with weights the tests make themselves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hdrvideo
from hdrvideo import colour as C
from hdrvideo.models import create, save_weights
from hdrvideo.processors import build_processor
from hdrvideo.presets import load_preset
from hdrvideo.stages import ROLL_OFF_HEADROOM, PeakRollOff

from conftest import decode_planes, write_planes_clip

FAST = {"x265_preset": "ultrafast"}


def _bt2408_like_weights(arch: str, path: Path) -> Path:
    """Seeded weights, nudged so the network's output is a plausible PQ image (not garbage)."""
    torch.manual_seed(0)
    model = create(arch)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.1)
    save_weights(model, path, {"note": "test weights"})
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("neural")
    frames = []
    for i in range(3):
        y = np.tile(np.linspace(40, 220, 64, dtype=np.float64), (32, 1)).astype(np.uint8)
        y = np.roll(y, 3 * i, axis=1)
        cb = np.full((16, 32), 110 + i, np.uint8)
        cr = np.full((16, 32), 150 - i, np.uint8)
        frames.append((y, cb, cr))
    return write_planes_clip(d / "in.mkv", frames, audio_seconds=0.15)


@pytest.mark.parametrize("preset,arch,scale", [("itm", "irnet-2", 1), ("sr4-itm", "irnet-5-x4", 4),
                                               ("sr4-itm-gpgm", "gpgmnet-x4", 4), ("sr2-itm", "irnet-5-x2", 2)])
def test_neural_presets_convert_end_to_end(tmp_path, clip, preset, arch, scale):
    weights = _bt2408_like_weights(arch, tmp_path / f"{arch}.safetensors")
    out = tmp_path / f"{preset}.mkv"
    report = hdrvideo.convert(clip, out, preset=preset, weights=str(weights), backend="torch", device="cpu", **FAST)
    assert report.frames == 3 and report.output_size == (64 * scale, 32 * scale)
    assert arch in report.processor
    planes = decode_planes(out)
    assert len(planes) == 3 and planes[0][0].shape == (32 * scale, 64 * scale)
    # the decoded output equals what the model itself computes on the decoded input (±codes),
    # rolled off to the mastering peak like every conversion
    p = load_preset(preset)
    model_proc = build_processor(p, device="cpu", weights=str(weights), backend="torch")
    src = decode_planes(clip)[0]
    t = [torch.from_numpy(p_.astype(np.int32))[None] for p_ in src]
    rgb = C.planes_to_rgb(*t, "bt709", 8, False).clamp(0, 1)
    target = PeakRollOff(p.mastering.max_luminance, ROLL_OFF_HEADROOM).target_nits
    y, cb, cr = C.rgb_to_planes(C.pq_roll_off(model_proc(rgb), target), "bt2020", 10, False)
    diff = np.abs(planes[0][0].astype(int) - y[0].numpy())
    assert np.median(diff) <= 2 and diff.mean() < 4


def test_tiled_conversion_matches_untiled(tmp_path, clip):
    weights = _bt2408_like_weights("irnet-2", tmp_path / "irnet-2.safetensors")
    outs = []
    for tile in (0, 24):
        out = tmp_path / f"tile{tile}.mkv"
        hdrvideo.convert(clip, out, preset="itm", weights=str(weights), backend="torch", tile=tile, crf=0, **FAST)
        outs.append(decode_planes(out)[0][0].astype(int))
    assert np.abs(outs[0] - outs[1]).max() <= 2


def test_official_checkpoint_layout_loads_via_pth(tmp_path, clip):
    # a .pth with the official IRNet key names (plain state_dict) works through --weights
    torch.manual_seed(1)
    model = create("irnet-2")
    pth = tmp_path / "official.pth"
    torch.save(model.state_dict(), pth)
    report = hdrvideo.convert(clip, tmp_path / "o.mkv", preset="itm", weights=str(pth), backend="torch", **FAST)
    assert report.frames == 3


def test_mismatched_weights_fail_with_key_names(tmp_path, clip):
    weights = _bt2408_like_weights("irnet-2", tmp_path / "irnet-2.safetensors")
    with pytest.raises(Exception, match="IRB3|missing|mismatch|unexpected|irnet"):
        hdrvideo.convert(clip, tmp_path / "x.mkv", preset="sr4-itm", weights=str(weights), backend="torch")
    assert not (tmp_path / "x.mkv").exists()


def test_models_command_json():
    proc = subprocess.run([sys.executable, "-m", "hdrvideo.cli", "models", "--json"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["irnet-2"]["params"] == 134_731 and rows["irnet-2"]["scale"] == 1
    assert rows["irnet-1-48"]["params"] == 49_302
    assert rows["irnet-5-x4"]["params"] == 468_192 and rows["irnet-5-x4"]["scale"] == 4
    assert abs(rows["gpgmnet-x4"]["params"] - 920_000) / 920_000 < 0.10
    assert abs(rows["gpgmnet-x2"]["params"] - 770_000) / 770_000 < 0.10
    assert rows["agcm"]["params"] == 35_251
    assert "sr4-itm" in rows["irnet-5-x4"]["presets"]
    assert isinstance(rows["irnet-5-x4"]["weights_installed"], bool)
