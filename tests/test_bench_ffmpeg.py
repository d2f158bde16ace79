"""`hdrvideo bench --compare-ffmpeg`: the same job on both sides, alternating runs, honest skips.

Plumbing only, on a tiny clip: the figures themselves are measured by running the command
(README, "Speed"). Needs imageio-ffmpeg's FFmpeg (the ``bench`` extra); skipped without it,
except the skip itself, which is tested everywhere.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from hdrvideo.bench import compare_ffmpeg, find_bench_ffmpeg
from hdrvideo.errors import UsageError


def _ffmpeg_or_skip() -> str:
    pytest.importorskip("imageio_ffmpeg")
    exe, why = find_bench_ffmpeg()
    if exe is None:
        pytest.skip(why)
    return exe


def test_compare_runs_the_same_job_on_both_sides():
    _ffmpeg_or_skip()
    r = compare_ffmpeg(size=(64, 36), frames=6, runs=2, x265_preset="ultrafast", crf=30, warmup=False)
    assert r.frames == 6 and r.input == "synthetic" and r.input_size == (64, 36)
    assert r.output_frames == {"hdrvideo": 6, "ffmpeg": 6}
    assert len(r.hdrvideo_wall_s) == len(r.ffmpeg_wall_s) == len(r.hdrvideo_cpu_s) == 2
    assert min(r.hdrvideo_wall_s + r.ffmpeg_wall_s + r.hdrvideo_cpu_s + r.ffmpeg_cpu_s) > 0
    assert r.speed_ratio == pytest.approx(r.median_ffmpeg_s / r.median_hdrvideo_s, abs=1e-3)
    assert len(r.pair_ratios) == 2 and 0 < r.max_fall <= r.max_cll
    # the same settings: x265 preset, CRF and HDR10 parameters, the audio copied, hvc1
    ff, hv = r.commands["ffmpeg"], r.commands["hdrvideo"]
    params = ff[ff.index("-x265-params") + 1]
    assert "master-display=" in params and "hdr10=1" in params
    assert ff[ff.index("-preset") + 1] == "ultrafast" and ff[ff.index("-crf") + 1] == "30"
    assert ff[ff.index("-c:a") + 1] == "copy" and ff[ff.index("-tag:v") + 1] == "hvc1"
    assert "npl=203" in ff[ff.index("-vf") + 1] and "transfer=smpte2084" in ff[ff.index("-vf") + 1]
    assert hv[hv.index("--x265-preset") + 1] == "ultrafast" and hv[hv.index("--crf") + 1] == "30"
    assert hv[hv.index("--preset") + 1] == "bt2408"
    assert hv[hv.index("--deband") + 1] == "off"  # zscale does not dequantise either


def test_compare_refuses_a_mapping_ffmpeg_does_not_do():
    with pytest.raises(UsageError, match="bt2408"):
        compare_ffmpeg(preset="sr4-itm", frames=2, runs=1)


def test_compare_without_imageio_ffmpeg_skips_in_one_line():
    code = ("import sys; sys.modules['imageio_ffmpeg'] = None\n"
            "sys.argv = ['hdrvideo', 'bench', '--compare-ffmpeg', '--frames', '2']\n"
            "from hdrvideo.cli import main\nmain()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("note: --compare-ffmpeg skipped: imageio-ffmpeg is not installed")
