"""Chunked conversion of one film compared with the one-piece conversion of the same clip."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import hdrvideo
from hdrvideo.colour import rgb_to_planes
from hdrvideo.errors import UsageError
from hdrvideo.farm.chunks import clean_cuts, convert_chunked, plan_chunks
from hdrvideo.media.hdr10_boxes import read_mp4_hdr10

from conftest import audio_packets, decode_planes, flat_planes, video_pts, write_planes_clip

FAST = {"x265_preset": "ultrafast", "crf": 4}
GOP = 8


def scene(t: float, w: int, h: int) -> torch.Tensor:
    """Smooth gradients and a bright disc moving ~4 px per frame (frame alignment shows)."""
    y = torch.linspace(0, 1, h).view(h, 1).expand(h, w)
    x = torch.linspace(0, 1, w).view(1, w).expand(h, w)
    img = torch.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.5 + 0.3 * torch.sin(math.pi * (x + t * 0.5)) ** 2])
    cx = 0.15 + 0.7 * ((t * 1.5) % 1.0)
    d = torch.sqrt(((x - cx) * w / h) ** 2 + (y - 0.4) ** 2)
    return (img + torch.exp(-((d / 0.15) ** 2)).unsqueeze(0)).clamp(0, 1)


def film_clip(path: Path, frames: int = 48, w: int = 64, h: int = 36, gop: int = GOP, *, pts: list[int] | None = None,
              time_base: Fraction = Fraction(1, 24), audio: float = 2.0) -> Path:
    """H.264 with a keyframe every ``gop`` frames and B-frames (reordering), plus AAC audio."""
    planes = []
    for i in range(frames):
        t = float(pts[i] * time_base) if pts is not None else i / 24
        yy, cb, cr = rgb_to_planes(scene(t, w, h).unsqueeze(0), "bt709", 8, False, "left")
        planes.append(tuple(p[0].numpy().astype(np.uint8) for p in (yy, cb, cr)))
    opts = {"preset": "veryfast", "crf": "16",
            "x264-params": f"log-level=error:keyint={gop}:min-keyint={gop}:scenecut=0:bframes=3:b-adapt=0"}
    return write_planes_clip(path, planes, codec="libx264", options=opts, pts=pts, time_base=time_base,
                             audio_seconds=audio)


def packet_times(path: Path) -> tuple[list[int], list[int]]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pk = [(p.pts, p.dts) for p in c.demux(s) if p.size]
    return [p for p, _ in pk], [d for _, d in pk]


@pytest.fixture(scope="module")
def film(tmp_path_factory) -> Path:
    return film_clip(tmp_path_factory.mktemp("chunks") / "film.mp4")


@pytest.fixture(scope="module")
def whole(film):
    return hdrvideo.convert(film, film.with_name("whole.mp4"), **FAST)


@pytest.fixture(scope="module")
def chunked(film):
    return convert_chunked(film, film.with_name("chunked.mp4"), chunks=3, workers=1, **FAST)


# ----------------------------------------------------------------------------------- plan


def test_clean_cuts_respect_reordering():
    # decode order of I P B B | I P B B, with presentation times; the second I is clean
    pts = [0, 3, 1, 2, 4, 7, 5, 6]
    keys = [True, False, False, False, True, False, False, False]
    assert clean_cuts(pts, keys) == [4]
    # an open-GOP keyframe: leading pictures (decoded after it) are shown before it → no cut
    pts = [0, 3, 1, 2, 6, 4, 5, 7]
    keys = [True, False, False, False, True, False, False, False]
    assert clean_cuts(pts, keys) == []


def test_plan_splits_at_keyframes_into_equal_parts(film):
    plan = plan_chunks(film, 3)
    assert [c.frames for c in plan.chunks] == [16, 16, 16]
    assert [c.first_packet for c in plan.chunks] == [0, 16, 32]
    assert [c.start for c in plan.chunks] == [0, Fraction(16, 24), Fraction(32, 24)]
    assert plan.origin == 0 and plan.frames == 48
    # more chunks than keyframes: as many as there are clean cuts, with a warning
    plan = plan_chunks(film, 20)
    assert len(plan.chunks) == 48 // GOP and plan.warnings


# ------------------------------------------------------------------ chunked == one piece


def test_frame_count_and_timestamps_equal(whole, chunked):
    assert chunked.frames == whole.frames == 48
    assert len(chunked.chunks) == 3 and [c["frames"] for c in chunked.chunks] == [16, 16, 16]
    a, b = video_pts(whole.output), video_pts(chunked.output)
    assert a == b
    assert all(t1 < t2 for t1, t2 in zip(b, b[1:]))
    pts, dts = packet_times(Path(chunked.output))
    assert all(d1 < d2 for d1, d2 in zip(dts, dts[1:])), "decode timestamps must increase strictly"
    assert all(d <= p for p, d in zip(pts, dts))


def test_colour_equal_away_from_boundaries(whole, chunked):
    a, b = decode_planes(whole.output), decode_planes(chunked.output)
    assert len(a) == len(b) == 48
    means = []
    for i, (fa, fb) in enumerate(zip(a, b)):
        diffs = [np.abs(pa.astype(int) - pb.astype(int)) for pa, pb in zip(fa, fb)]
        means.append(max(float(d.mean()) for d in diffs))
        # frame alignment: each chunked frame is closest to the same one-piece frame
        for j in (i - 1, i + 1):
            if 0 <= j < len(a):
                other = float(np.abs(a[j][0].astype(int) - fb[0].astype(int)).mean())
                assert float(diffs[0].mean()) < other, f"frame {i} looks like one-piece frame {j}"
    # within 2 codes (10-bit, mean absolute difference per plane) everywhere …
    assert max(means) <= 2.0, means
    # … and bit-identical before the first boundary's B-frame window (x265 is deterministic
    # within a GOP; the parts differ from the one-piece encode only by their GOP structure)
    assert max(means[: 16 - 4]) == 0.0, means[:16]


def test_hdr10_metadata_is_the_maximum_over_chunks(whole, chunked):
    meta = read_mp4_hdr10(chunked.output)
    ref = read_mp4_hdr10(whole.output)
    assert meta["max_cll"] == chunked.max_cll == max(c["max_cll"] for c in chunked.chunks)
    assert meta["max_fall"] == chunked.max_fall == max(c["max_fall"] for c in chunked.chunks)
    # measured on the decoded output of different encodes: close to the one-piece values
    assert abs(meta["max_cll"] - ref["max_cll"]) <= 0.05 * ref["max_cll"]
    assert abs(meta["max_fall"] - ref["max_fall"]) <= 0.05 * ref["max_fall"] + 1
    for key in ("mastering_primaries", "mastering_max_luminance", "mastering_min_luminance",
                "colour_primaries", "transfer_characteristics", "matrix_coefficients"):
        assert meta[key] == ref[key], key
    with av.open(chunked.output) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.codec_context.profile) == ("hevc", "Main 10")
        assert s.codec_tag == "hvc1"


def test_audio_is_muxed_once_over_the_whole_duration(film, whole, chunked):
    got, ref, src = audio_packets(chunked.output), audio_packets(whole.output), audio_packets(film)
    assert got == ref and len(src) == len(got) > 80  # 2 s of AAC, every packet exactly once
    assert chunked.streams_copied == whole.streams_copied == ["audio #1 aac"]

    def audio_times(path):
        with av.open(str(path)) as c:
            s = c.streams.audio[0]
            return [float(p.pts * s.time_base) for p in c.demux(s) if p.size]

    assert audio_times(chunked.output) == audio_times(whole.output)


def test_vfr_timestamps_are_kept_through_a_process_pool(tmp_path):
    # irregular frame durations (33/42/50 ms) in a Matroska file with a 1 ms time base
    steps = [33, 42, 50]
    pts = [0]
    for i in range(1, 32):
        pts.append(pts[-1] + steps[i % 3])
    src = film_clip(tmp_path / "vfr.mkv", 32, pts=pts, time_base=Fraction(1, 1000), audio=1.5)
    whole = hdrvideo.convert(src, tmp_path / "whole.mkv", **FAST)
    report = convert_chunked(src, tmp_path / "chunked.mkv", chunks=2, workers=2, **FAST)
    assert report.frames == whole.frames == 32 and len(report.chunks) == 2
    got = video_pts(report.output)
    assert got == video_pts(whole.output)
    assert [round(t * 1000) for t in got] == pts
    assert audio_packets(report.output) == audio_packets(whole.output)
    assert report.engine == "local"


def test_codec_mov_cannot_hold_is_split_into_matroska(tmp_path):
    # FFV1 (keyframe every 4 frames) in Matroska: MOV cannot carry FFV1, Matroska's 1 ms
    # time base is the source's own, so the chunks go into Matroska without rounding
    src = write_planes_clip(tmp_path / "ffv1.mkv", [flat_planes(64, 36, (100 + 5 * i, 128, 128)) for i in range(12)],
                            options={"g": "4"}, time_base=Fraction(1, 1000), pts=[i * 40 for i in range(12)],
                            audio_seconds=0.5)
    whole = hdrvideo.convert(src, tmp_path / "whole.mkv", **FAST)
    report = convert_chunked(src, tmp_path / "chunked.mkv", chunks=3, workers=1, **FAST)
    assert [c["frames"] for c in report.chunks] == [4, 4, 4]
    assert video_pts(report.output) == video_pts(whole.output)
    assert [round(t * 1000) for t in video_pts(report.output)] == [i * 40 for i in range(12)]
    assert audio_packets(report.output) == audio_packets(whole.output)
    for fa, fb in zip(decode_planes(report.output), decode_planes(whole.output), strict=True):
        assert max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(fa, fb)) <= 2
    assert (report.max_cll, report.max_fall) == (whole.max_cll, whole.max_fall)


# ---------------------------------------------------------------------------- errors, CLI


def test_chunk_usage_errors(film, tmp_path):
    with pytest.raises(UsageError, match="--start"):
        convert_chunked(film, tmp_path / "a.mp4", chunks=2, start=0.5)
    with pytest.raises(UsageError, match="object-store"):
        convert_chunked(film, tmp_path / "a.mp4", chunks=2, transfer="object-store")
    with pytest.raises(UsageError, match="unknown option"):
        convert_chunked(film, tmp_path / "a.mp4", chunks=2, colour="red")
    with pytest.raises(UsageError, match="chunks"):
        convert_chunked(film, tmp_path / "a.mp4", chunks=0)
    assert not list(tmp_path.iterdir())  # nothing left behind


def test_cli_convert_chunks_json_progress(film, tmp_path):
    import signal

    from typer.testing import CliRunner

    from hdrvideo.cli import app

    out = tmp_path / "cli.mkv"
    old = signal.getsignal(signal.SIGTERM)
    try:
        result = CliRunner().invoke(app, ["convert", str(film), "-o", str(out), "--chunks", "2",
                                          "--x265-preset", "ultrafast", "--progress", "json", "--json"])
    finally:
        signal.signal(signal.SIGTERM, old)
    assert result.exit_code == 0, result.output
    lines = [json.loads(ln) for ln in result.stderr.splitlines() if ln.startswith("{")]
    assert {"frame", "total", "fps", "eta_s", "stage"} <= set(lines[0])
    assert lines[-1]["stage"] == "done" and lines[-1]["report"]["frames"] == 48
    assert [c["frames"] for c in lines[-1]["report"]["chunks"]] == [24, 24]
    frames = [ln["frame"] for ln in lines]
    assert frames == sorted(frames)
    assert json.loads(result.stdout)["output"] == str(out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # work dir removed
