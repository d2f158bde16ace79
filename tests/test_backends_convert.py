"""`hdrvideo convert` with the torch and the onnxruntime backends agree within 1 code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hdrvideo import models

from conftest import decode_planes

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.mark.parametrize("preset,arch", [("itm", "irnet-2"), ("sr2-itm", "irnet-5-x2")])
def test_convert_torch_vs_onnxruntime_within_one_code(preset, arch, tmp_path, monkeypatch):
    from hdrvideo.cli import app
    from hdrvideo.media.sample import write_clip

    monkeypatch.setenv("HDRVIDEO_CACHE", str(tmp_path / "cache"))
    clip = tmp_path / "in.mp4"
    write_clip(str(clip), width=64, height=36, seconds=5 / 24, fps=24, audio=False)
    torch.manual_seed(0)
    weights = models.save_weights(models.create(arch), tmp_path / f"{arch}.safetensors")
    outs = {}
    runner = CliRunner()
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"out-{backend}.mp4"
        res = runner.invoke(app, ["convert", str(clip), "-o", str(out), "--preset", preset, "--weights", str(weights),
                                  "--backend", backend, "--device", "cpu", "--x265-preset", "ultrafast",
                                  "--progress", "none", "--no-luma-adjust"])
        # (luma adjustment re-solves Y' against each pixel's rebuilt chroma, so a 1-code chroma
        # difference between backends can move an edge pixel's Y' by a few codes: the backends
        # are compared on the plain packing)
        assert res.exit_code == 0, res.output
        outs[backend] = decode_planes(out)
    a, b = outs["torch"], outs["onnxruntime"]
    assert len(a) == len(b) == 5
    worst = 0
    for fa, fb in zip(a, b):
        for pa, pb in zip(fa, fb):
            assert pa.shape == pb.shape
            worst = max(worst, int(np.abs(pa.astype(np.int32) - pb.astype(np.int32)).max()))
    print(f"max code difference torch vs onnxruntime ({preset}): {worst}")
    assert worst <= 1
