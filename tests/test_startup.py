"""Start-up: commands that only describe things do not load torch; the sample clip is quick to make.

Speed itself is measured by ``hdrvideo bench``, not here: these tests check the causes (which
modules a command imports, what the sample scene still contains).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from hdrvideo.media.sample import SampleScene

_PROBE = """
import atexit, os, sys
sys.argv = ["hdrvideo"] + {args!r}
def report():
    heavy = sorted(m for m in ("torch", "hdrvideo.pipeline", "hdrvideo.colour") if m in sys.modules)
    print("heavy modules:", heavy, file=sys.stderr, flush=True)
exit_now = os._exit
def report_and_exit(code):  # the CLI ends with os._exit (no atexit handlers)
    report()
    exit_now(code)
os._exit = report_and_exit
atexit.register(report)
from hdrvideo.cli import main
main()
"""


def loaded_after(*args: str) -> tuple[int, str, list[str]]:
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(args=list(args))], capture_output=True, text=True,
                          timeout=120)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("heavy modules:")]
    assert line, proc.stderr
    return proc.returncode, proc.stdout, eval(line[-1].split(":", 1)[1])  # noqa: S307 - our own list literal


@pytest.mark.parametrize("args", [("--help",), ("presets",), ("presets", "--json"), ("convert", "--help")])
def test_describing_commands_do_not_import_torch(args):
    code, out, heavy = loaded_after(*args)
    assert code == 0 and out.strip()
    assert heavy == []


def test_probe_does_not_import_torch(sample_clip):
    code, out, heavy = loaded_after("probe", str(sample_clip))
    assert code == 0 and "BT.709" in out
    assert heavy == []
    code, out, heavy = loaded_after("probe", str(sample_clip), "--json")
    assert code == 0 and json.loads(out)["video"]["width"] == 64
    assert heavy == []


def test_import_hdrvideo_is_light_until_a_conversion_is_asked_for():
    code = ("import sys, hdrvideo; light = 'torch' not in sys.modules; hdrvideo.ConvertOptions; "
            "print(light, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.split()
    assert out == ["True", "True"]


def test_sample_scene_keeps_what_users_look_at():
    scene = SampleScene()
    a, b = scene(0.0, 96, 54), scene(1.5, 96, 54)
    assert a.shape == (3, 54, 96) and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    # a highlight: the clipped sun reaches SDR white
    assert float(a.amax(0).max()) == 1.0 and float(b.amax(0).max()) == 1.0
    # motion: the sun and the ground stripes move
    assert float((a - b)[:, :30].abs().max()) > 0.3 and float((a - b)[:, 36:46].abs().max()) > 0.1
    # a gradient: the sky brightens towards the horizon in every channel, far from the sun
    sky = scene(0.0, 96, 54)[:, :30, 90]
    assert bool((sky[:, 1:] >= sky[:, :-1]).all()) and float(sky[2, -1] - sky[2, 0]) > 0.04
    # colour: 75 % bars, among them pure green (0, 0.75, 0)
    bars = a[:, 49, :]
    assert any(torch.allclose(bars[:, x], torch.tensor([0.0, 0.75, 0.0])) for x in range(96))
    assert len({tuple(bars[:, x].tolist()) for x in range(96)}) == 7
    # the static layers are per size: switching sizes and back gives the same frame
    scene(0.0, 64, 36)
    assert torch.equal(scene(0.0, 96, 54), a)
