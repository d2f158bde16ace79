"""Real-world inputs (issue 10): data/attachment streams, damaged and truncated files, interlaced
video, things the output cannot keep, colour guessing and overrides, rotation, batch resume."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import hdrvideo
from hdrvideo import colour as C
from hdrvideo.errors import UsageError
from hdrvideo.media.probe import guess_matrix, guess_primaries

from conftest import (
    decode_planes,
    flat_planes,
    has_tool,
    remux_damaging,
    video_pts,
    write_h264_clip,
    write_planes_clip,
    write_soft_pulldown_clip,
    write_telecined_clip,
)

FAST = {"x265_preset": "ultrafast"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The CLI in this process (typer's runner; a subprocess would spend seconds importing torch)."""
    import signal

    from typer.testing import CliRunner

    from hdrvideo.cli import _register_optional_commands, app

    _register_optional_commands()
    old = signal.getsignal(signal.SIGTERM)
    try:
        res = CliRunner().invoke(app, list(args))
    finally:
        signal.signal(signal.SIGTERM, old)
    return subprocess.CompletedProcess(args, res.exit_code, res.stdout, res.stderr)


def stream_types(path: Path) -> list[str]:
    with av.open(str(path)) as c:
        return [s.type for s in c.streams]


def one(warnings: list[str], needle: str) -> str:
    hits = [w for w in warnings if needle in w]
    assert len(hits) == 1, warnings
    return hits[0]


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# ------------------------------------------------------------------ 1. data and attachment streams


@pytest.fixture(scope="module")
def timecode_mov(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tc")
    # FFmpeg's mov muxer writes a tmcd track for a video stream with timecode metadata
    path = write_h264_clip(d / "camera.mov", 10, stream_metadata={"timecode": "01:00:00:00"}, audio_seconds=0.4)
    assert stream_types(path) == ["video", "audio", "data"]
    return path


def test_timecode_track_is_carried_and_shifted(tmp_path, timecode_mov):
    proc = run_cli("probe", str(timecode_mov))
    assert proc.returncode == 0, proc.stderr
    assert "data tmcd 01:00:00:00" in proc.stdout

    out = tmp_path / "out.mov"
    report = hdrvideo.convert(timecode_mov, out, **FAST)
    assert not [w for w in report.warnings if "data" in w or "timecode" in w], report.warnings
    assert "timecode 01:00:00:00 (tmcd track)" in report.streams_copied
    with av.open(str(out)) as c:
        data = [s for s in c.streams if s.type == "data"]
        assert len(data) == 1 and data[0].metadata["timecode"] == "01:00:00:00"
        assert len(c.streams.audio) == 1
    # from --start 0.2 s (5 frames at 25 fps) the timecode starts 5 frames later; MP4 holds tmcd too
    cut = tmp_path / "cut.mp4"
    report = hdrvideo.convert(timecode_mov, cut, start=0.2, **FAST)
    assert report.frames == 5
    with av.open(str(cut)) as c:
        assert [s.metadata.get("timecode") for s in c.streams if s.type == "data"] == ["01:00:00:05"]
    # Matroska has no timecode track: the video stream's TIMECODE tag carries it
    mkv = tmp_path / "out.mkv"
    report = hdrvideo.convert(timecode_mov, mkv, **FAST)
    assert "timecode 01:00:00:00 (tag)" in report.streams_copied
    assert [w for w in report.warnings if not w.startswith("assumed ")] == []
    with av.open(str(mkv)) as c:
        assert stream_types(mkv) == ["video", "audio"]
        assert {k.lower(): v for k, v in c.streams.video[0].metadata.items()}["timecode"] == "01:00:00:00"
    assert leftovers(tmp_path, {"out.mov", "cut.mp4", "out.mkv"}) == []


def test_timecode_arithmetic_drop_frame():
    from hdrvideo.media.timecode import frames_to_timecode, shift_timecode, timecode_to_frames

    ntsc = Fraction(30000, 1001)
    for n in range(0, 17982 * 2, 7):  # every 7th frame of 20 minutes round-trips
        assert timecode_to_frames(frames_to_timecode(n, ntsc, True), ntsc) == (n, True)
    assert frames_to_timecode(1800, ntsc, True) == "00:01:00;02"  # ;00 and ;01 are skipped
    assert frames_to_timecode(17982, ntsc, True) == "00:10:00;00"  # but not at the tenth minute
    assert shift_timecode("01:00:00:00", Fraction(25), Fraction(41, 5)) == "01:00:08:05"
    assert shift_timecode("01:00:00:24", Fraction(25), Fraction(1, 25), Fraction(50)) == "01:00:01:00"
    # inverse telecine, 29.97 → 23.976: the label keeps its seconds; drop frame is read by its digits
    ntsc, film = Fraction(30000, 1001), Fraction(24000, 1001)
    assert shift_timecode("01:00:10;00", ntsc, Fraction(1), film) == "01:00:11:00"
    assert shift_timecode("01:00:10:00", ntsc, Fraction(1), film) == "01:00:11:00"
    assert shift_timecode("00:59:59;29", ntsc, Fraction(0), film) == "00:59:59:23"
    assert shift_timecode("01:00:10;00", ntsc, Fraction(1), 2 * ntsc) == "01:00:11;00"  # bwdif keeps drop frame


def test_other_data_stream_skipped_with_one_warning(tmp_path):
    src = tmp_path / "drone.ts"
    with av.open(str(src), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        klv = out.add_data_stream("klv")  # SMPTE 336 KLV metadata, as drones and cameras write it
        for i in range(4):
            f = av.VideoFrame(64, 48, "yuv420p")
            f.pts = i
            for p in vs.encode(f):
                out.mux(p)
            pk = av.Packet(b"\x06\x0e\x2b\x34" + bytes(12))
            pk.stream, pk.pts, pk.dts, pk.time_base = klv, i * 3600, i * 3600, Fraction(1, 90000)
            out.mux(pk)
        for p in vs.encode(None):
            out.mux(p)
    proc = run_cli("probe", str(src))
    assert proc.returncode == 0 and "data klv" in proc.stdout
    report = hdrvideo.convert(src, tmp_path / "out.mp4", **FAST)
    assert one(report.warnings, "data stream") == "data stream #1 (klv) cannot be copied; skipped"
    assert report.frames == 4 and stream_types(tmp_path / "out.mp4") == ["video"]


def test_dvd_navigation_packets_dropped_silently(tmp_path):
    src = tmp_path / "title.vob"
    with av.open(str(src), "w", format="dvd") as out:  # FFmpeg's DVD muxer adds the nav packs
        vs = out.add_stream("mpeg2video", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        for i in range(4):
            f = av.VideoFrame(64, 48, "yuv420p")
            f.pts = i
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    with av.open(str(src)) as c:
        assert [getattr(s, "name", None) for s in c.streams if s.type == "data"] == ["dvd_nav_packet"]
    report = hdrvideo.convert(src, tmp_path / "out.mp4", **FAST)
    assert report.frames == 4 and not [w for w in report.warnings if "stream" in w]


def jpeg(size: int = 16) -> bytes:
    import io

    buf = io.BytesIO()
    with av.open(buf, "w", format="mjpeg") as c:
        s = c.add_stream("mjpeg", rate=1)
        s.width = s.height = size
        s.pix_fmt = "yuvj420p"
        frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 200, np.uint8), format="rgb24")
        for p in s.encode(frame.reformat(format="yuvj420p")) + s.encode(None):
            c.mux(p)
    return buf.getvalue()


def test_mkv_attachments_copied_into_mkv_and_skipped_once_for_mp4(tmp_path):
    src = tmp_path / "subs.mkv"
    font, cover = bytes(range(256)) * 4, jpeg()
    out = av.open(str(src), "w")
    vs = out.add_stream("ffv1", rate=24)
    vs.width, vs.height, vs.pix_fmt = 64, 36, "yuv420p"
    out.add_attachment("Font.ttf", "application/x-truetype-font", font)
    out.add_attachment("cover.jpg", "image/jpeg", cover)  # FFmpeg shows it as a cover-art video stream
    for i in range(3):
        f = av.VideoFrame(64, 36, "yuv420p")
        for p, v in zip(f.planes, (120, 128, 128)):
            np.frombuffer(p, np.uint8)[:] = v
        f.pts = i
        for p in vs.encode(f):
            out.mux(p)
    for p in vs.encode(None):
        out.mux(p)
    out.close()

    proc = run_cli("probe", str(src))
    assert proc.returncode == 0 and "attachment application/x-truetype-font Font.ttf" in proc.stdout, proc.stdout
    assert "video mjpeg (cover art)" in proc.stdout
    mkv = tmp_path / "out.mkv"
    report = hdrvideo.convert(src, mkv, **FAST)
    assert [w for w in report.warnings if not w.startswith("assumed ")] == []
    assert report.streams_copied == ["attachment #1 Font.ttf", "attachment #2 cover.jpg"]
    with av.open(str(mkv)) as c:
        att = [s for s in c.streams if s.type == "attachment"]
        assert len(att) == 1 and att[0].data == font and att[0].metadata["filename"] == "Font.ttf"
        pic = [s for s in c.streams.video if s.disposition & av.stream.Disposition.attached_pic]
        assert len(pic) == 1 and pic[0].metadata["filename"] == "cover.jpg"
        assert bytes(next(p for p in c.demux(pic[0]) if p.size)) == cover
    assert hdrvideo.probe(mkv).video.index == 0  # the cover is not taken for the video
    mp4 = tmp_path / "out.mp4"
    report = hdrvideo.convert(src, mp4, **FAST)
    assert "attachment #1 (Font.ttf) cannot be stored in mp4" in one(report.warnings, "attachment")
    assert "cover art (stream #2 mjpeg) cannot be stored in mp4" in one(report.warnings, "cover art")
    assert stream_types(mp4) == ["video"] and report.frames == 3


# ------------------------------------------------------------------ 2. a damaged packet


def test_damaged_packet_resyncs_keeps_timestamps_and_warns_once(tmp_path):
    clean = write_h264_clip(tmp_path / "clean.mp4", 100, gop=10, audio_seconds=4.0)
    bad = remux_damaging(clean, tmp_path / "bad.mp4", video_packet=20)  # a keyframe's payload
    src_pts = video_pts(clean)
    out = tmp_path / "out.mkv"
    report = hdrvideo.convert(bad, out, **FAST)
    assert 90 <= report.frames < 100
    if has_tool("ffprobe"):
        ref = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v",
                              "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(bad)],
                             capture_output=True, text=True).stdout.strip()
        assert abs(report.frames - int(ref)) <= 2, (report.frames, ref)  # what ffmpeg decodes
    msg = one(report.warnings, "damaged")
    assert f"{100 - report.frames} frame(s)" in msg
    got = video_pts(out)
    assert len(got) == report.frames and got == sorted(got)
    # every output frame sits at its source frame's time (the output starts at the first one)
    offset = got[0] - src_pts[0]
    assert all(min(abs(t - offset - s) for s in src_pts) < 1e-3 for t in got)
    assert got[-1] - offset == pytest.approx(src_pts[-1], abs=1e-3)  # decoding went on to the end
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        audio_end = max(float((p.pts + p.duration) * a.time_base) for p in c.demux(a) if p.size)
    assert abs((got[-1] + 0.04) - audio_end) < 0.1  # video and audio end together


# ------------------------------------------------------------------ 3. a truncated faststart MP4


def test_truncated_faststart_mp4_warns(tmp_path):
    full = write_h264_clip(tmp_path / "full.mp4", 50, options={"movflags": "+faststart"})
    data = full.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # the index comes first: it lists all 50 frames
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    proc = run_cli("convert", str(cut), "-o", str(tmp_path / "out.mp4"), "--x265-preset", "ultrafast", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    msg = one(report["warnings"], "truncated")
    assert "of the 50 frames its container lists" in msg and f"converted the {report['frames']} frame(s)" in msg
    assert 10 <= report["frames"] < 30
    assert len(decode_planes(tmp_path / "out.mp4")) == report["frames"]
    assert "truncated" in proc.stderr
    # an intact file says nothing of the sort
    assert not [w for w in hdrvideo.convert(full, tmp_path / "ok.mp4", **FAST).warnings if "truncated" in w]


# ------------------------------------------------------------------ 4. interlaced input


def combing(path: Path) -> float:
    """Mean |difference| between neighbouring lines minus that between lines two apart (Y')."""
    y = np.stack([p[0].astype(np.float64) for p in decode_planes(path)])
    return float(np.abs(y[:, 1:] - y[:, :-1]).mean() - np.abs(y[:, 2:] - y[:, :-2]).mean())


@pytest.fixture(scope="module")
def interlaced(tmp_path_factory) -> Path:
    return write_h264_clip(tmp_path_factory.mktemp("il") / "tff.mkv", 10, interlaced="tff")


def test_interlaced_input_detected_and_probed(tmp_path, interlaced):
    v = hdrvideo.probe(interlaced).video
    assert v.field_order == "tt" and v.interlaced_frames and v.interlaced
    proc = run_cli("probe", str(interlaced))
    assert "Scan type                : interlaced, top field first" in proc.stdout, proc.stdout
    bff = hdrvideo.probe(write_h264_clip(tmp_path / "bff.mkv", 2, interlaced="bff")).video
    assert bff.field_order == "bb" and bff.top_field_first is False
    progressive = hdrvideo.probe(write_h264_clip(tmp_path / "p.mkv", 2)).video
    assert not progressive.interlaced and progressive.field_order in ("progressive", "unknown")


def test_interlaced_input_deinterlaced_to_field_rate(tmp_path, interlaced):
    src_pts = video_pts(interlaced)
    assert src_pts == pytest.approx([i * 0.04 for i in range(10)])
    auto = tmp_path / "auto.mkv"
    report = hdrvideo.convert(interlaced, auto, **FAST)
    assert "input is interlaced (top field first): deinterlaced with bwdif" in one(report.warnings, "interlaced")
    assert report.frames == 20  # one frame per field
    assert video_pts(auto) == pytest.approx([i * 0.02 for i in range(20)], abs=1e-9)
    off = tmp_path / "off.mkv"
    report = hdrvideo.convert(interlaced, off, deinterlace="off", **FAST)
    assert report.frames == 10 and not [w for w in report.warnings if "interlaced" in w]
    assert video_pts(off) == pytest.approx(src_pts)
    # the fields of the moving bar are 2 px apart: woven frames comb, deinterlaced ones do not
    assert combing(off) > 4 * max(combing(auto), 0.5), (combing(off), combing(auto))


def test_deinterlace_exact_timestamps_in_mp4_and_on_off_for_progressive(tmp_path):
    # an MP4 time base of 1/12800: fields at 256-tick steps, exact in the halved time base
    mp4 = write_h264_clip(tmp_path / "il.mp4", 6, interlaced="bff")
    out = tmp_path / "il.hdr10.mp4"
    report = hdrvideo.convert(mp4, out, **FAST)
    assert report.frames == 12
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        pts = sorted(p.pts for p in c.demux(s) if p.size)
        assert [Fraction(p - pts[0]) * s.time_base for p in pts] == [Fraction(i, 50) for i in range(12)]
    prog = write_h264_clip(tmp_path / "p.mkv", 4)
    assert hdrvideo.convert(prog, tmp_path / "p0.mkv", **FAST).frames == 4  # auto: progressive untouched
    report = hdrvideo.convert(prog, tmp_path / "p1.mkv", deinterlace="on", **FAST)
    assert report.frames == 8 and one(report.warnings, "--deinterlace on")
    with pytest.raises(UsageError, match="deinterlace"):
        hdrvideo.convert(prog, tmp_path / "p2.mkv", deinterlace="maybe")


def test_interlaced_chunked_equals_field_count(tmp_path):
    from hdrvideo.farm.chunks import convert_chunked

    src = write_h264_clip(tmp_path / "il.mkv", 20, gop=10, interlaced="tff")
    report = convert_chunked(src, tmp_path / "out.mkv", chunks=2, workers=1, **FAST)
    assert report.frames == 40 and len(report.chunks) == 2
    assert video_pts(tmp_path / "out.mkv") == pytest.approx([i * 0.02 for i in range(40)], abs=1e-9)
    assert len([w for w in report.warnings if "deinterlaced" in w]) == 1


def bar_positions(path: Path) -> list[int]:
    """Left edge of the bright bar in each decoded frame (row 32 of Y'), -1 when there is none."""
    out = []
    for y, _, _ in decode_planes(path):
        row = y[32].astype(np.int64)
        bright = np.flatnonzero(row > (int(row.min()) + int(row.max())) // 2)
        out.append(int(bright[0]) if len(bright) and row.max() - row.min() > 100 else -1)
    return out


@pytest.fixture(scope="module")
def telecined(tmp_path_factory) -> Path:
    return write_telecined_clip(tmp_path_factory.mktemp("tc") / "film.mp4", 20)  # 25 frames of 29.97i


def test_telecined_film_inverse_telecined_to_its_own_frames(tmp_path, telecined):
    with av.open(str(telecined)) as c:
        assert c.streams.video[0].frames == 25
    out = tmp_path / "ivtc.mp4"
    report = hdrvideo.convert(telecined, out, deinterlace="ivtc", **FAST)
    assert "3:2 pulldown undone" in one(report.warnings, "ivtc") and report.frames == 20
    # every film frame once, in order, none doubled or lost: the bar steps 4 px a frame
    assert bar_positions(out) == [4 * i for i in range(20)]
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert s.average_rate == Fraction(24000, 1001)
        pts = sorted(p.pts for p in c.demux(s) if p.size)
        assert [Fraction(p - pts[0]) * s.time_base for p in pts] == [i * Fraction(1001, 24000) for i in range(20)]
    # whole film frames: the fields of a frame agree, so no combing
    assert combing(out) < 0.5, combing(out)


def test_telecine_detected_in_auto_mode_but_not_in_camera_video(tmp_path, telecined):
    report = hdrvideo.convert(telecined, tmp_path / "bob.mp4", **FAST)
    assert report.frames == 50  # auto stays bwdif at the field rate: one frame per field
    hint = one(report.warnings, "telecined")
    assert "--deinterlace ivtc restores its 23.976 frames/s" in hint
    repeated, examined = (int(w) for w in hint.split(": ")[1].split(" sampled")[0].split(" of "))
    report = hdrvideo.convert(telecined, tmp_path / "detect.mp4", deinterlace="detect", **FAST)
    assert report.frames == 20 and "inverse-telecined" in one(report.warnings, "--deinterlace detect")
    assert examined >= 20 and 0.3 <= repeated / examined <= 0.5  # 2 of every 5 frames
    assert "looks telecined: " in run_cli("probe", str(telecined)).stdout
    # a stream without a known duration (or not decodable after a seek) is read from its start
    from hdrvideo.media.probe import analyse_fields

    from_start = analyse_fields(str(telecined), dataclasses.replace(hdrvideo.probe(telecined).video, duration=None))
    assert from_start.examined >= 20 and from_start.telecined(Fraction(30000, 1001))  # 25 frames: 23 judged
    advice = json.loads(run_cli("probe", "--json", str(telecined)).stdout)["video"]["field_advice"]
    assert advice["kind"] == "telecined" and advice["deinterlace"] == "ivtc" and advice["examined"] == examined
    camera = write_h264_clip(tmp_path / "cam.mkv", 30, rate=30, interlaced="tff")  # interlaced at 30 frames/s
    report = hdrvideo.convert(camera, tmp_path / "cam.hdr10.mkv", **FAST)
    assert report.frames == 60 and not [w for w in report.warnings if "telecine" in w]
    report = hdrvideo.convert(camera, tmp_path / "cam.detect.mkv", deinterlace="detect", **FAST)
    assert report.frames == 60 and one(report.warnings, "deinterlaced with bwdif")  # detect: camera video → bwdif


def test_telecine_verdict_needs_repeats_on_the_five_frame_cadence():
    from hdrvideo.media.probe import FieldStats

    ntsc = Fraction(30000, 1001)
    # a real film's samples: stills and dark shots hide most repeats, but those seen keep cadence
    assert FieldStats(examined=152, repeated=30, cadenced=30).telecined(ntsc)
    assert not FieldStats(examined=152, repeated=30, cadenced=30).telecined(Fraction(25))  # no 3:2 at 25
    # stray repeats (fades, noise) fall on any position of the cycle
    assert not FieldStats(examined=152, repeated=20, cadenced=13).telecined(ntsc)
    assert not FieldStats(examined=152, repeated=9, cadenced=9).telecined(ntsc)  # too few to tell
    assert not FieldStats(examined=12, repeated=5, cadenced=5).telecined(ntsc)


def test_progressive_film_flagged_interlaced_is_advised_and_field_matched(tmp_path):
    from hdrvideo.farm.chunks import convert_chunked

    # 2:2 film / PsF: both fields of each frame from one instant, coded as interlaced 25i
    psf = write_h264_clip(tmp_path / "psf.mkv", 30, interlaced="tff", field_shift=0)
    report = hdrvideo.convert(psf, tmp_path / "bob.mkv", **FAST)
    assert report.frames == 60  # auto still deinterlaces what is flagged interlaced
    hint = one(report.warnings, "looks progressive")
    assert "--deinterlace off keeps them whole at 25 frames/s" in hint
    assert "looks progressive although flagged interlaced" in run_cli("probe", str(psf)).stdout
    # ivtc at 25 frames/s matches fields (2:2), keeps every frame and its time, and the captions
    sent = caption_triplets(30)
    captioned = with_a53_captions(psf, tmp_path / "psf.mp4", sent)
    out = tmp_path / "matched.mkv"
    report = hdrvideo.convert(captioned, out, deinterlace="ivtc", **FAST)
    assert "fields matched into whole frames (2:2 pulldown" in one(report.warnings, "fieldmatch")
    assert report.frames == 30 and video_pts(out) == pytest.approx(video_pts(psf), abs=1e-9)
    assert bar_positions(out)[:5] == [0, 4, 8, 12, 16] and combing(out) < 0.5
    assert frame_captions(out) == sent
    # --deinterlace detect follows the advice: film frames kept as they are
    report = hdrvideo.convert(psf, tmp_path / "detect.mkv", deinterlace="detect", **FAST)
    assert report.frames == 30 and "frames kept as they are" in one(report.warnings, "detect")
    assert combing(tmp_path / "detect.mkv") < 0.5
    # film a field out of step (each frame's bottom field is the next frame's instant): ivtc pairs them again
    shifted = write_h264_clip(tmp_path / "shifted.mkv", 30, interlaced="tff", field_shift=4)
    report = hdrvideo.convert(shifted, tmp_path / "shifted.bob.mkv", **FAST)
    assert "--deinterlace fieldmatch matches the fields back into whole frames" in one(report.warnings, "out of step")
    assert combing(shifted) > 5  # as stored, every frame combs
    report = hdrvideo.convert(shifted, tmp_path / "rematched.mkv", deinterlace="detect", **FAST)
    assert report.frames == 30 and "fields matched into whole frames" in one(report.warnings, "--deinterlace detect")
    assert combing(tmp_path / "rematched.mkv") < 0.5
    # the same at 30i, an NTSC rate (30p material a field out of step): every frame kept, none decimated
    s30 = write_h264_clip(tmp_path / "shifted30.mkv", 30, rate=30, interlaced="tff", field_shift=4)
    report = hdrvideo.convert(s30, tmp_path / "s30.mkv", deinterlace="detect", **FAST)
    assert report.frames == 30 and "fields matched into whole frames" in one(report.warnings, "--deinterlace detect")
    assert combing(tmp_path / "s30.mkv") < 0.5 and bar_positions(tmp_path / "s30.mkv")[:3] == [0, 4, 8]
    assert video_pts(tmp_path / "s30.mkv") == pytest.approx(video_pts(s30), abs=1e-9)
    # camera video at 25i gets no advice; chunks can field-match (frame for frame)
    assert not [w for w in hdrvideo.convert(write_h264_clip(tmp_path / "cam.mkv", 30, interlaced="tff"),
                                            tmp_path / "cam.hdr10.mkv", **FAST).warnings if "looks" in w]
    chunked = convert_chunked(psf, tmp_path / "chunked.mkv", chunks=2, workers=1, deinterlace="ivtc", **FAST)
    assert chunked.frames == 30 and video_pts(tmp_path / "chunked.mkv") == pytest.approx(video_pts(psf), abs=1e-9)


def test_soft_pulldown_film_converted_at_its_rate_on_an_even_grid(tmp_path):
    src = write_soft_pulldown_clip(tmp_path / "dvd.mkv", 30, timecode="00:59:59;28")
    assert sorted(set(np.round(np.diff(video_pts(src)) * 60000 / 1001))) == [2.0, 3.0]  # 3:2 fields (ms times)
    v = hdrvideo.probe(src).video
    assert v.pulldown and v.rate == Fraction(24000, 1001) and not v.interlaced
    assert "Pulldown                 : soft 3:2: film at 23.976 fps" in run_cli("probe", str(src)).stdout
    out = tmp_path / "film.mp4"
    report = hdrvideo.convert(src, out, **FAST)
    assert "soft 3:2 pulldown" in one(report.warnings, "pulldown") and report.frames == 30
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert s.average_rate == Fraction(24000, 1001)
        pts = sorted(p.pts for p in c.demux(s) if p.size)
        assert [Fraction(p - pts[0]) * s.time_base for p in pts] == [i * Fraction(1001, 24000) for i in range(30)]
    assert bar_positions(out) == [(4 * i) % 90 for i in range(30)]  # every film frame once, in order
    # the 29.97 drop-frame start timecode becomes the film's non-drop one, read by its digits
    assert "timecode 00:59:59:22" in " ".join(report.streams_copied)
    # 29.97 material that is not pulldown (an ordinary progressive clip) is left as it is
    plain = write_h264_clip(tmp_path / "p.mkv", 30, rate=30)
    assert not hdrvideo.probe(plain).video.pulldown


def test_pulldown_retimer_snaps_film_and_keeps_video_rate_material():
    from hdrvideo.media.decode import PulldownRetimer

    r = PulldownRetimer(Fraction(1, 90000), Fraction(24000, 1001), start_ticks=49505)
    assert r.time_base == Fraction(1, 360000) and r.step == 15015  # 1001/24000 s in whole ticks
    # film: 3 and 2 fields (4504.5 and 3003 ticks) from the start, up to 1/5 frame off the grid
    film = [49505, 54010, 57013, 61517, 64520]
    assert [r(p) for p in film] == [4 * 49505 + k * 15015 for k in range(5)]
    # a 3:2:2:3 cadence (fields 3, 2, 2, 3, ...) is film too
    r2 = PulldownRetimer(Fraction(1, 180000), Fraction(24000, 1001), start_ticks=0)  # a field: 3003 ticks
    fields = [0, 3, 2, 2, 3, 3, 2, 2, 3]
    times = [3003 * sum(fields[:i + 1]) for i in range(len(fields))]
    assert [r2(t) for t in times] == [15015 * k for k in range(len(fields))]
    # then 29.97 video (3003 ticks, 2 fields, a frame): it keeps its own even times
    video = [64520 + 3003 * k for k in range(1, 9)]
    out = [r(p) for p in video]
    assert out[3:] == [4 * p for p in video[3:]]  # after three 2-field gaps: no 3:2 cadence, no snapping
    assert all(b > a for a, b in zip(out, out[1:])) and out[0] > 4 * 49505 + 4 * 15015


def test_ivtc_keeps_captions_runs_in_one_piece_under_chunks_and_refuses_unknown_rates(tmp_path, telecined):
    from hdrvideo.farm.chunks import convert_chunked
    from hdrvideo.pipeline import deinterlace_settings

    sent = caption_triplets(25)
    captioned = with_a53_captions(telecined, tmp_path / "cc.mp4", sent)
    report = hdrvideo.convert(captioned, tmp_path / "cc.hdr10.mp4", deinterlace="ivtc", **FAST)
    assert not [w for w in report.warnings if "caption" in w] and "closed captions" in " ".join(report.streams_copied)
    got = frame_captions(tmp_path / "cc.hdr10.mp4")
    assert len(got) == 20 and b"".join(g or b"" for g in got) == b"".join(sent)  # every byte once, in order
    # each on the film frame whose 1/23.976 s holds its 29.97i frame's time: 2, 1, 1, 1 in each cycle
    assert [len(g or b"") // 3 for g in got] == [sum(1 for j in range(25) if (4 * j) // 5 == k) for k in range(20)]
    # --chunks: the telecined film is converted in one piece, as without, and says so
    chunked = convert_chunked(telecined, tmp_path / "c.mp4", chunks=2, workers=1, deinterlace="ivtc", **FAST)
    assert "converted in one piece" in one(chunked.warnings, "inverse telecine")
    assert (chunked.frames, len(chunked.chunks)) == (20, 1)
    assert bar_positions(tmp_path / "c.mp4") == [4 * i for i in range(20)]
    video = hdrvideo.probe(telecined).video
    assert deinterlace_settings(video, "ivtc") == ("ivtc", "auto")
    with pytest.raises(UsageError, match="constant frame rate"):
        deinterlace_settings(dataclasses.replace(video, rate=None), "ivtc")


# ------------------------------------------------------------------ 5. things dropped get one warning


def test_alpha_extra_video_streams_and_unused_weights_warn_once(tmp_path):
    y, cb, cr = flat_planes(64, 36, (235, 128, 128))
    alpha = np.full_like(y, 17)
    clip = write_planes_clip(tmp_path / "alpha.mkv", [(y, cb, cr, alpha)] * 2, pix_fmt="yuva420p")
    assert hdrvideo.probe(clip).video.has_alpha
    out = tmp_path / "alpha.hdr10.mkv"
    report = hdrvideo.convert(clip, out, crf=4, **FAST)
    assert "alpha channel (yuva420p)" in one(report.warnings, "alpha")
    assert abs(int(decode_planes(out)[0][0][18, 32]) - 573) <= 1  # the colour itself is kept

    two = tmp_path / "two.mkv"
    with av.open(str(two), "w") as c:
        streams = []
        for w, h in ((64, 36), (96, 54)):
            s = c.add_stream("ffv1", rate=24)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            streams.append(s)
        for i in range(2):
            for s in streams:
                f = av.VideoFrame(s.width, s.height, "yuv420p")
                f.pts = i
                for p in s.encode(f):
                    c.mux(p)
        for s in streams:
            for p in s.encode(None):
                c.mux(p)
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"unused")
    report = hdrvideo.convert(two, tmp_path / "two.hdr10.mp4", weights=str(weights), **FAST)
    assert "input has 2 video streams; only stream #0 is converted (#1 ffv1 left out)" in one(report.warnings,
                                                                                            "video streams")
    assert "--weights is ignored: preset bt2408 uses no network" in one(report.warnings, "--weights")
    assert report.input_size == (64, 36) and stream_types(tmp_path / "two.hdr10.mp4") == ["video"]


# ------------------------------------------------------------------ 6. colour guesses and overrides


@pytest.mark.parametrize("size,matrix,primaries", [
    ((640, 480), "bt601", "bt601-525"), ((720, 486), "bt601", "bt601-525"), ((720, 576), "bt601", "bt601-625"),
    ((1024, 576), "bt601", "bt601-625"), ((640, 272), "bt601", "bt709"), ((960, 540), "bt601", "bt709"),
    ((720, 360), "bt601", "bt709"), ((1280, 720), "bt709", "bt709"), ((1280, 544), "bt709", "bt709"),
    ((1440, 1080), "bt709", "bt709"), ((704, 578), "bt709", "bt709"),
])
def test_untagged_guesses_follow_mpv(size, matrix, primaries):
    assert guess_matrix(*size) == matrix
    assert guess_primaries(*size, guess_matrix(*size)) == primaries
    # tagged matrices decide the primaries first (mpv's mp_image_params_guess_csp)
    assert guess_primaries(*size, "bt709") == "bt709" and guess_primaries(*size, "bt2020") == "bt2020"


def test_untagged_file_probe_and_overrides(tmp_path):
    green = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, 36, 64)
    planes = tuple(p[0].numpy().astype(np.uint8) for p in C.rgb_to_planes(green, "bt709", 8, False))
    clip = write_planes_clip(tmp_path / "u.mkv", [planes] * 2, tags=None)
    pal = write_planes_clip(tmp_path / "pal.mkv", [flat_planes(720, 576, (100, 128, 128))], tags=None)
    assert (hdrvideo.probe(pal).video.matrix, hdrvideo.probe(pal).video.primaries) == ("bt601", "bt601-625")
    proc = run_cli("probe", str(clip))
    assert ("Convert reads it as      : matrix bt601 (guessed), primaries bt709 (guessed), range limited (guessed), "
            "chroma siting left") in proc.stdout, proc.stdout
    proc = run_cli("probe", str(clip), "--input-matrix", "bt709", "--input-range", "limited")
    assert "matrix bt709 (override), primaries bt709 (guessed), range limited (override)" in proc.stdout

    def codes(matrix: str, primaries: str, full: bool = False) -> tuple[int, int, int]:
        t = [torch.from_numpy(p.astype(np.int32))[None] for p in planes]
        rgb = C.planes_to_rgb(*t, matrix, 8, full, "left", torch.float64).clamp(0, 1)
        rgb = C.convert_primaries_display(rgb, primaries, "bt709")
        y, cb, cr = C.rgb_to_planes(C.bt2408_sdr_to_pq(rgb), "bt2020", 10, False)
        return int(y[0, 18, 32]), int(cb[0, 9, 16]), int(cr[0, 9, 16])

    cases = [({}, codes("bt601", "bt709"), "bt601 (guessed)"),
             ({"input_matrix": "bt709"}, codes("bt709", "bt709"), "bt709 (override)"),
             ({"input_matrix": "bt709", "input_primaries": "bt601-625", "input_range": "full"},
              codes("bt709", "bt601-625", True), "bt709 (override)")]
    assert len({c[1] for c in cases}) == 3  # the three readings give different output
    for k, (opts, expected, matrix_word) in enumerate(cases):
        out = tmp_path / f"o{k}.mkv"
        report = hdrvideo.convert(clip, out, crf=4, **opts, **FAST)
        y, cb, cr = decode_planes(out)[0]
        got = (int(y[18, 32]), int(cb[9, 16]), int(cr[9, 16]))
        assert all(abs(g - e) <= 2 for g, e in zip(got, expected)), (opts, got, expected)
        assert report.input_colour["matrix"] == matrix_word
        assert bool([w for w in report.warnings if w.startswith("assumed matrix")]) == ("input_matrix" not in opts)
    with pytest.raises(UsageError, match="input matrix"):
        hdrvideo.convert(clip, tmp_path / "x.mkv", input_matrix="smpte240m")
    proc = run_cli("convert", str(clip), "--input-primaries", "p3")
    assert proc.returncode == 2 and "p3" in proc.stderr and not (tmp_path / "u.hdr10.mkv").exists()


def test_rotation_is_probed_and_kept(tmp_path):
    src = write_h264_clip(tmp_path / "phone.mp4", 3, rotation=90)
    assert hdrvideo.probe(src).video.rotation == 90
    assert "Rotation                 : 90°" in run_cli("probe", str(src)).stdout
    out = tmp_path / "phone.hdr10.mp4"
    hdrvideo.convert(src, out, **FAST)
    assert hdrvideo.probe(out).video.rotation == 90
    assert hdrvideo.probe(write_h264_clip(tmp_path / "flat.mp4", 2)).video.rotation == 0


def pixel_aspects(path: Path) -> tuple[Fraction | None, Fraction | None]:
    """(container's, bitstream VUI's) pixel aspect of the first video stream; None = unsignalled."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        next(c.decode(s))  # the decoder sets the codec's aspect from the SPS VUI
        return tuple(Fraction(a) if a else None for a in (s.sample_aspect_ratio, s.codec_context.sample_aspect_ratio))


def test_anamorphic_source_keeps_its_display_aspect(tmp_path):
    """PAL 4:3 stored as 720×576 has 16:15 pixels: dropping that would squeeze the picture."""
    src = write_h264_clip(tmp_path / "pal.mp4", 3, size=(72, 48), sample_aspect=Fraction(16, 15))
    info = hdrvideo.probe(src).video
    assert info.sample_aspect == Fraction(16, 15) and info.display_aspect == Fraction(8, 5)
    assert "Pixel aspect ratio       : 16:15" in run_cli("probe", str(src)).stdout
    out = tmp_path / "pal.hdr10.mp4"
    report = hdrvideo.convert(src, out, **FAST)
    assert report.sample_aspect == "16:15"
    assert pixel_aspects(out) == (Fraction(16, 15), Fraction(16, 15))  # MP4 'pasp' and HEVC VUI
    # a crop keeps the pixel shape; MKV carries it as its display size
    mkv = tmp_path / "pal.mkv"
    hdrvideo.convert(src, mkv, crop="64:48:4:0", **FAST)
    assert pixel_aspects(mkv) == (Fraction(16, 15), Fraction(16, 15))
    # square pixels stay unsignalled
    square = write_h264_clip(tmp_path / "sq.mp4", 2, size=(72, 48))
    assert hdrvideo.probe(square).video.sample_aspect is None
    assert hdrvideo.convert(square, tmp_path / "sq.hdr10.mp4", **FAST).sample_aspect == ""


def test_output_sample_aspect_keeps_the_display_aspect():
    from hdrvideo.presets import output_sample_aspect

    assert output_sample_aspect(Fraction(16, 15), (720, 576), (2880, 2304)) == Fraction(16, 15)  # ×4
    # HDV 1440×1080 (4:3 pixels) fitted into 3840×2160 keeps 16:9 on screen
    sar = output_sample_aspect(Fraction(4, 3), (1440, 1080), (2880, 2160))
    assert Fraction(2880, 2160) * sar == Fraction(16, 9)
    # even rounding of an odd width is compensated exactly
    sar = output_sample_aspect(Fraction(8, 9), (719, 480), (1438 * 2, 960 * 2))
    assert Fraction(1438 * 2, 960 * 2) * sar == Fraction(719, 480) * Fraction(8, 9)
    assert output_sample_aspect(None, (853, 480), (854, 480)) is None
    assert output_sample_aspect(Fraction(1), (853, 480), (854, 480)) is None
    far = output_sample_aspect(Fraction(65521, 65519), (1001, 999), (1000, 1000))  # VUI: 16 bits each
    assert max(far.numerator, far.denominator) <= 65535
    assert abs(float(far) - 65521 / 65519 * 1001 * 1000 / (999 * 1000)) < 1e-6


def odd_parity(byte: int) -> int:
    """A CEA-608 byte: 7 data bits and an odd-parity top bit."""
    return byte | (0x80 if bin(byte).count("1") % 2 == 0 else 0)


#: a CEA-608 pop-on caption "HI" on channel 1, one byte pair a frame: resume caption loading
#: (sent twice, as 608 control codes are), the text, end of caption (twice), then null padding
HI_CAPTION = [(0x14, 0x20), (0x14, 0x20), (ord("H"), ord("I")), (0x14, 0x2F), (0x14, 0x2F)]


def caption_triplets(frames: int) -> list[bytes]:
    """The A/53 cc_data triplet (field 1, valid) of each frame for :data:`HI_CAPTION`."""
    pairs = HI_CAPTION + [(0, 0)] * max(0, frames - len(HI_CAPTION))
    return [bytes([0xFC, odd_parity(a), odd_parity(b)]) for a, b in pairs[:frames]]


def with_a53_captions(src: Path, dst: Path, triplets: list[bytes] | None = None) -> Path:
    """``src`` (H.264 in MP4, no B-frames) with closed captions in each access unit: an SEI NAL of
    ATSC A/53 Part 4 ``cc_data`` in ITU-T T.35 user data (H.264 D.1.6), as broadcast encoders
    add. ``triplets[i]`` is frame i's cc_data (default: one 608 pair on field 1 per frame)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        s = inp.streams.video[0]
        o = out.add_stream_from_template(s)
        for i, p in enumerate(q for q in inp.demux(s) if q.size):
            cc = triplets[i] if triplets else bytes([0xFC, 0x94, 0x2C])  # default: EDM
            payload = bytes([0xB5, 0x00, 0x31]) + b"GA94" + b"\x03" + bytes([0x40 | len(cc) // 3, 0xFF]) + cc + b"\xff"
            nal = b"\x06" + bytes([0x04, len(payload)]) + payload + b"\x80"
            q = av.Packet(len(nal).to_bytes(4, "big") + nal + bytes(p))
            q.pts, q.dts, q.time_base, q.is_keyframe, q.stream = p.pts, p.dts, p.time_base, p.is_keyframe, o
            out.mux(q)
    return dst


def frame_captions(path: Path) -> list[bytes | None]:
    """The A/53 cc_data FFmpeg's decoder attaches to each frame, in presentation order."""
    with av.open(str(path)) as c:
        frames = sorted(c.decode(video=0), key=lambda f: f.pts)
        return [bytes(sd) if (sd := f.side_data.get(av.sidedata.sidedata.Type.A53_CC)) is not None else None
                for f in frames]


def test_closed_captions_are_carried_into_the_hevc_output(tmp_path):
    plain = write_h264_clip(tmp_path / "plain.mp4", 10)
    sent = caption_triplets(10)
    captioned = with_a53_captions(plain, tmp_path / "cc.mp4", sent)
    assert frame_captions(captioned) == sent
    assert hdrvideo.probe(captioned).video.captions and not hdrvideo.probe(plain).video.captions
    assert "Closed captions          : CEA-608/708 in the video stream (kept" in run_cli("probe", str(captioned)).stdout
    out = tmp_path / "cc.hdr10.mp4"
    report = hdrvideo.convert(captioned, out, x265_preset="medium")  # B-frames: access units leave reordered
    assert not [w for w in report.warnings if "caption" in w] and "closed captions" in " ".join(report.streams_copied)
    assert frame_captions(out) == sent  # every frame's bytes, on the same frame
    # a window starts at its own frame's captions
    assert frame_captions(hdrvideo.convert(captioned, tmp_path / "w.mkv", start=0.12, **FAST).output) == sent[3:]
    # bwdif: the first field's frame carries the source frame's bytes, the second none
    assert frame_captions(hdrvideo.convert(captioned, tmp_path / "i.mkv", deinterlace="on", **FAST).output) == [
        x for cc in sent for x in (cc, None)]
    # two passes (the second reads cached planes or decodes again): still once per frame
    two = hdrvideo.convert(captioned, tmp_path / "2p.mp4", bitrate="300k", two_pass=True, **FAST)
    assert frame_captions(two.output) == sent
    assert frame_captions(hdrvideo.convert(captioned, tmp_path / "no.mp4", copy_subtitles=False, **FAST).output) == [None] * 10
    # chunks: every part carries its own frames' captions (the parts leave subtitle streams to the join)
    from hdrvideo.farm.chunks import convert_chunked

    long = with_a53_captions(write_h264_clip(tmp_path / "long.mp4", 20, gop=10), tmp_path / "long.cc.mp4",
                             caption_triplets(20))
    chunked = convert_chunked(long, tmp_path / "chunked.mp4", chunks=2, workers=1, **FAST)
    assert len(chunked.chunks) == 2 and frame_captions(tmp_path / "chunked.mp4") == caption_triplets(20)
    assert not [w for w in hdrvideo.convert(plain, tmp_path / "p.hdr10.mp4", **FAST).warnings if "caption" in w]
    if has_tool("ffmpeg"):  # FFmpeg's own 608 decoder reads the caption back as text
        srt = subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"movie={out}[out0+subcc]", "-map", "0:s",
                              "-f", "srt", "-"], capture_output=True, text=True, timeout=60).stdout
        assert "HI" in srt, srt


def test_a53_sei_nal_splits_long_cc_data_and_escapes_start_codes():
    from hdrvideo.media.captions import a53_sei_nal, insert_prefix_sei

    cc = bytes([0xFC, 0x00, 0x00]) * 40  # 40 triplets of zeros: two messages (cc_count ≤ 31), escapes
    nal = a53_sei_nal(cc)
    body = nal[4:]
    assert body[:2] == bytes([0x4E, 0x01]) and b"\x00\x00\x00" not in body and b"\x00\x00\x01" not in body
    with pytest.raises(ValueError):
        a53_sei_nal(b"\xfc\x00")
    # placed before the first slice: after an AUD (35) and the parameter sets (32-34), before IDR (19)
    aud, vps, idr = b"\x00\x00\x00\x01\x46\x01\x10", b"\x00\x00\x00\x01\x40\x01\x0c", b"\x00\x00\x01\x26\x01\xaf"
    assert insert_prefix_sei(aud + vps + idr, nal) == aud + vps + nal + idr
    lp = lambda n: len(n).to_bytes(4, "big") + n  # noqa: E731 - MP4's length-prefixed NAL units
    assert insert_prefix_sei(lp(vps[4:]) + lp(idr[3:]), nal) == lp(vps[4:]) + lp(nal[4:]) + lp(idr[3:])
    # FFmpeg's HEVC decoder reads both messages back as one frame's cc_data
    from hdrvideo.media.encode import EncoderConfig, HevcEncoder

    packets = []
    enc = HevcEncoder(None, EncoderConfig(64, 64, Fraction(1, 25), Fraction(25), crf=30, x265_preset="ultrafast"),
                      packet_sink=lambda p: packets.append(bytes(p)))
    y = np.full((64, 64), 400, np.uint16)
    c = np.full((32, 32), 512, np.uint16)
    enc.encode(y, c, c, 0, captions=cc)
    enc.close()
    dec = av.CodecContext.create("hevc", "r")
    dec.extradata = enc.extradata
    frames = [f for p in packets for f in dec.decode(av.Packet(p))] + list(dec.decode(None))
    assert len(frames) == 1 and bytes(frames[0].side_data.get(av.sidedata.sidedata.Type.A53_CC)) == cc


# ------------------------------------------------------------------ 13. batch resume and output


def test_batch_resume_rejects_truncated_output(tmp_path):
    from hdrvideo.farm.batch import Job, check_output, run_batch
    from hdrvideo.farm.engines import LocalEngine

    src = write_h264_clip(tmp_path / "a.mp4", 24, audio_seconds=1.0)
    out = tmp_path / "out" / "a.hdr10.mp4"
    state = tmp_path / "state.json"
    here = LocalEngine(1, in_process=True)
    first = run_batch([Job(str(src), str(out), options=FAST)], state, engine=here)
    assert [j.status for j in first.jobs] == ["done"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "out", "state.json"]  # no .lock left
    entry = json.loads(state.read_text())["jobs"][str(out)]
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    # the header still lists 24 frames; counting the packets that can be read finds the cut
    why = check_output(str(out), entry["report"])
    assert why is not None and ("readable frames" in why or "cut short" in why), why
    assert "bytes" in check_output(str(out), entry["report"], entry["bytes"])
    second = run_batch([Job(str(src), str(out), options=FAST)], state, engine=here)
    assert [j.status for j in second.jobs] == ["done"]
    assert check_output(str(out), second.jobs[0].report) is None and len(decode_planes(out)) == 24
    third = run_batch([Job(str(src), str(out), options=FAST)], state, engine=here)
    assert [j.status for j in third.jobs] == ["skipped"]


def test_state_lock_is_exclusive_and_removed(tmp_path):
    from hdrvideo.farm.batch import BatchState
    from hdrvideo.fsutil import ExclusiveLock

    state = tmp_path / "s.json"
    other = ExclusiveLock(str(state) + ".lock")
    assert other.acquire()
    with pytest.raises(UsageError, match="another batch"):
        BatchState(state)
    other.release()
    assert not (tmp_path / "s.json.lock").exists()
    with BatchState(state):
        assert (tmp_path / "s.json.lock").exists()
    assert list(tmp_path.iterdir()) == []


def test_batch_cli_summary_uncut_and_warnings_name_their_job(tmp_path):
    name = "a_rather_long_reel_name_from_the_camera_0001.mkv"
    (tmp_path / "in").mkdir()
    write_planes_clip(tmp_path / "in" / name, [flat_planes(64, 36, (120, 128, 128))] * 2, tags=None)
    proc = run_cli("batch", "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"),
                   "-O", "x265_preset=ultrafast", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert name in proc.stdout and name.replace(".mkv", ".hdr10.mkv") in proc.stdout  # not cut to fit 80 columns
    row = next(ln for ln in proc.stdout.splitlines() if name in ln)
    assert "done" in row and " 2 " in row  # the frames column is there too
    assert f"job 1 ({name}): assumed matrix bt601" in " ".join(proc.stderr.split())
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [".hdrvideo-batch.state.json", name.replace(".mkv", ".hdr10.mkv")]


def test_manifest_columns_set_the_input_options(tmp_path, interlaced):
    from hdrvideo.farm.batch import load_manifest
    from hdrvideo.pipeline import ConvertOptions, Pipeline

    (tmp_path / "jobs.csv").write_text(
        "input,output,deinterlace,input_matrix,input_primaries,input_range\n"
        f"{interlaced},a.mkv,off,bt709,bt601-625,full\n"
        f"{interlaced},b.mkv,,,,\n")
    a, b = load_manifest(tmp_path / "jobs.csv")
    assert a.options == {"deinterlace": "off", "input_matrix": "bt709", "input_primaries": "bt601-625",
                         "input_range": "full"} and b.options == {}
    plan_a = Pipeline(a.input, a.output, ConvertOptions(**a.options)).plan()
    plan_b = Pipeline(b.input, b.output, ConvertOptions(**b.options)).plan()
    assert (plan_a.video.matrix, plan_a.video.primaries, plan_a.video.full_range) == ("bt709", "bt601-625", True)
    assert plan_a.deinterlace is None and plan_a.time_base == Fraction(1, 1000)
    assert plan_b.deinterlace == ("all", "auto") and plan_b.time_base == Fraction(1, 2000) and plan_b.total == 20


def test_caption_retimer_keeps_order_and_rate_within_cc_count():
    from hdrvideo.media.captions import CaptionRetimer

    src_dur, out_dur = Fraction(1001, 30000), Fraction(1001, 24000)
    r = CaptionRetimer(out_dur)
    pad = bytes([0xF8, 0x00, 0x00])  # cc_valid = 0: padding, nothing to carry
    frames = [bytes([0xFC, 0x80 + j % 64, 0x80]) * 20 + pad * 3 for j in range(15)]  # 20 valid triplets a frame
    for j, cc in enumerate(frames):
        r.add(j * src_dur, cc)
    got = [r.take(k * out_dur) or b"" for k in range(1, 15)]  # a window starting at output frame 1
    counts = [len(g) // 3 for g in got]
    assert max(counts) == 31 and counts[0] == 31  # cc_count is 5 bits: the excess waits for the next frame
    # every valid triplet once, in order (frame 0 is within the first frame's rounding), no padding
    assert b"".join(got) == b"".join(f[:60] for f in frames)
    late = CaptionRetimer(out_dur)
    for j in range(10):
        late.add(j * src_dur, bytes([0xFC, 0x80 + j, 0x80]))
    assert late.take(5 * out_dur)[:3] == bytes([0xFC, 0x80 + 5, 0x80])  # frames before the window's first are gone
