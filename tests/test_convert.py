"""End-to-end conversions of tiny generated clips: pixel values, tags, metadata, timing, safety."""

from __future__ import annotations

import json
import os
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import hdrvideo
from hdrvideo import colour as C
from hdrvideo.errors import InputError, OutputExistsError, UnsupportedInputError, WeightsMissingError
from hdrvideo.media.hdr10_boxes import read_mkv_hdr10, read_mp4_hdr10

from conftest import (
    TARGETS,
    audio_packets,
    bars_planes,
    decode_planes,
    flat_planes,
    has_tool,
    video_pts,
    write_planes_clip,
)

FAST = {"x265_preset": "ultrafast"}


def centre(plane: np.ndarray) -> int:
    h, w = plane.shape
    return int(plane[h // 2, w // 2])


# ---------------------------------------------------------------- pixel values (issue table)


@pytest.mark.parametrize("src,expected,tol", TARGETS)
def test_bt2408_correctness_targets(tmp_path, src, expected, tol):
    clip = write_planes_clip(tmp_path / "in.mkv", [flat_planes(64, 36, src)] * 3)
    out = tmp_path / "out.mkv"
    report = hdrvideo.convert(clip, out, preset="bt2408", crf=4, **FAST)
    assert report.frames == 3
    for y, cb, cr in decode_planes(out):
        assert abs(centre(y) - expected[0]) <= tol
        if src != (126, 128, 128):
            assert abs(centre(cb) - expected[1]) <= tol
            assert abs(centre(cr) - expected[2]) <= tol
        else:
            assert centre(cb) == 512 and centre(cr) == 512


def test_full_range_and_10bit_inputs_give_the_same_codes(tmp_path):
    # the same three colours as limited 8-bit, full-range 8-bit and limited 10-bit sources
    colours = [t[0] for t in TARGETS]
    expected = [t[1] for t in TARGETS]

    def to_full(c):
        ycc = C.dequantize_ycbcr(*(torch.tensor(v) for v in c), 8, False, torch.float64)
        y = round(float(ycc[0]) * 255)
        return (y, min(255, round(float(ycc[1]) * 255 + 128)), min(255, round(float(ycc[2]) * 255 + 128)))

    full = write_planes_clip(tmp_path / "full.mkv", [bars_planes(96, 32, [to_full(c) for c in colours])] * 2,
                             tags=(1, 1, 1, 2))
    ten = write_planes_clip(tmp_path / "ten.mkv",
                            [tuple(p.astype(np.uint16) * 4 for p in bars_planes(96, 32, colours))] * 2,
                            pix_fmt="yuv420p10le")
    for clip in (full, ten):
        out = tmp_path / (clip.stem + ".hdr10.mkv")
        hdrvideo.convert(clip, out, crf=4, **FAST)
        y, cb, cr = decode_planes(out)[0]
        for i, (ey, ecb, ecr) in enumerate(expected):
            x = 16 + 32 * i  # bar centre
            assert abs(int(y[16, x]) - ey) <= 2, (clip.name, i)
            if i == 2:
                assert abs(int(cb[8, x // 2]) - ecb) <= 3 and abs(int(cr[8, x // 2]) - ecr) <= 3


def _expected_codes(planes, matrix: str, primaries: str) -> tuple[int, int, int]:
    """The issue's chain computed directly with the colour module (float64, no pipeline)."""
    t = [torch.from_numpy(p.astype(np.int32))[None] for p in planes]
    rgb = C.planes_to_rgb(*t, matrix, 8, False, "left", torch.float64).clamp(0, 1)
    rgb = C.convert_primaries_display(rgb, primaries, "bt709")
    y, cb, cr = C.rgb_to_planes(C.bt2408_sdr_to_pq(rgb), "bt2020", 10, False)
    return int(y[0, 18, 32]), int(cb[0, 9, 16]), int(cr[0, 9, 16])


def test_untagged_sd_is_bt601_and_tags_win(tmp_path):
    # a green encoded with the BT.601 matrix and left untagged: players read SD as BT.601
    # (mpv's rule; primaries BT.709 since 36 lines is neither 480/486 nor 576)
    green = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, 36, 64)
    planes = tuple(p[0].numpy().astype(np.uint8) for p in C.rgb_to_planes(green, "bt601", 8, False))
    untagged = write_planes_clip(tmp_path / "untagged.mkv", [planes] * 3, tags=None)
    info = hdrvideo.probe(untagged).video
    assert (info.matrix, info.primaries, info.full_range) == ("bt601", "bt709", False)
    # the same planes tagged BT.709 must be read as BT.709 (tags win over the size rule)
    tagged = write_planes_clip(tmp_path / "tagged.mkv", [planes] * 3)
    assert hdrvideo.probe(tagged).video.matrix == "bt709"
    right = _expected_codes(planes, "bt601", "bt709")
    wrong = _expected_codes(planes, "bt709", "bt709")
    assert max(abs(a - b) for a, b in zip(right, wrong)) > 20  # the test can tell them apart
    for clip, expected in ((untagged, right), (tagged, wrong)):
        out = tmp_path / (clip.stem + ".hdr10.mkv")
        report = hdrvideo.convert(clip, out, crf=4, **FAST)
        y, cb, cr = decode_planes(out)[0]
        got = (centre(y), centre(cb), centre(cr))
        assert all(abs(g - e) <= 2 for g, e in zip(got, expected)), (clip.name, got, expected)
        assert any("bt601" in w for w in report.warnings) == (clip is untagged)


# ---------------------------------------------------------------- tags and HDR10 metadata


@pytest.fixture(scope="module")
def converted_sample(tmp_path_factory):
    from hdrvideo.media.sample import write_clip

    d = tmp_path_factory.mktemp("sample")
    src = d / "sample.mp4"
    write_clip(str(src), width=96, height=54, seconds=1.0, fps=24)
    mp4 = d / "sample.hdr10.mp4"
    mkv = d / "sample.hdr10.mkv"
    r_mp4 = hdrvideo.convert(src, mp4, **FAST)
    r_mkv = hdrvideo.convert(src, mkv, **FAST)
    return src, mp4, mkv, r_mp4, r_mkv


def test_mp4_has_hvc1_colr_mdcv_clli(converted_sample):
    src, mp4, _mkv, report, _ = converted_sample
    meta = read_mp4_hdr10(str(mp4))
    assert (meta["colour_primaries"], meta["transfer_characteristics"], meta["matrix_coefficients"]) == (9, 16, 9)
    assert meta["full_range"] is False
    assert meta["mastering_primaries"]["green"] == pytest.approx((0.265, 0.69))
    assert meta["mastering_primaries"]["white"] == pytest.approx((0.3127, 0.329))
    assert meta["mastering_max_luminance"] == 1000 and meta["mastering_min_luminance"] == pytest.approx(0.0001)
    assert meta["max_cll"] == report.max_cll > 0 and meta["max_fall"] == report.max_fall > 0
    with av.open(str(mp4)) as c:
        v = c.streams.video[0]
        assert v.codec_context.name == "hevc" and v.codec_tag == "hvc1"
        assert v.codec_context.pix_fmt == "yuv420p10le"
        assert v.codec_context.profile == "Main 10"
        assert (v.codec_context.color_primaries, v.codec_context.color_trc, v.codec_context.colorspace,
                v.codec_context.color_range) == (9, 16, 9, 1)
    with open(mp4, "rb") as fh:
        head = fh.read(64)
    assert b"moov" in head  # faststart: moov before mdat


def test_mkv_has_colour_and_mastering_metadata(converted_sample):
    _src, _mp4, mkv, _r, report = converted_sample
    meta = read_mkv_hdr10(str(mkv))
    assert (meta["colour_primaries"], meta["transfer_characteristics"], meta["matrix_coefficients"]) == (9, 16, 9)
    assert meta["max_cll"] == report.max_cll and meta["max_fall"] == report.max_fall
    assert meta["mastering_max_luminance"] == pytest.approx(1000)
    assert meta["mastering_primaries"]["red"] == pytest.approx((0.68, 0.32), abs=1e-5)


@pytest.mark.skipif(not has_tool("ffprobe"), reason="ffprobe not installed")
def test_ffprobe_sees_side_data(converted_sample):
    _src, mp4, mkv, report, _ = converted_sample
    for path in (mp4, mkv):
        out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_streams", "-of", "json", str(path)],
                             capture_output=True, text=True, check=True).stdout
        stream = json.loads(out)["streams"][0]
        assert stream["color_transfer"] == "smpte2084" and stream["color_primaries"] == "bt2020"
        assert stream["color_space"] == "bt2020nc" and stream["color_range"] == "tv"
        side = {d["side_data_type"]: d for d in stream.get("side_data_list", [])}
        assert side["Content light level metadata"]["max_content"] == report.max_cll
        assert side["Mastering display metadata"]["max_luminance"] in ("10000000/10000", "1000/1")


@pytest.mark.skipif(not has_tool("mediainfo"), reason="mediainfo not installed")
def test_mediainfo_reports_hdr10(converted_sample):
    _src, mp4, mkv, report, _ = converted_sample
    for path in (mp4, mkv):
        text = subprocess.run(["mediainfo", str(path)], capture_output=True, text=True, check=True).stdout
        assert "SMPTE ST 2086, HDR10 compatible" in text
        assert re.search(rf"Maximum Content Light Level\s+: {report.max_cll}\b", text)
        assert re.search(rf"Maximum Frame-Average Light Level\s+: {report.max_fall}\b", text)
        assert "PQ" in text and "BT.2020" in text


def test_max_cll_and_fall_measured_and_never_understated(converted_sample):
    _src, mp4, _mkv, report, _ = converted_sample
    frame_max, frame_mean = [], []
    for y, cb, cr in decode_planes(mp4):
        t = lambda a: torch.from_numpy(a.astype(np.int32))[None]  # noqa: E731
        rgb = C.planes_to_rgb(t(y), t(cb), t(cr), "bt2020", 10, False, "left", torch.float64).clamp(0, 1)
        m, f = C.content_light_level(rgb)
        frame_max.append(float(m))
        frame_mean.append(float(f))
    decoded_cll, decoded_fall = max(frame_max), max(frame_mean)
    # measured on the decoded output and rounded up: never below what a decoder shows
    assert decoded_cll <= report.max_cll <= decoded_cll + 1
    assert decoded_fall <= report.max_fall <= decoded_fall + 1
    # the sample's clipped sun reaches SDR white: BT.2408 puts it at 203 cd/m² in BT.2020 red/green
    assert 203 <= report.max_cll < 1000


def test_light_level_input_option(tmp_path, sample_clip):
    fast = hdrvideo.convert(sample_clip, tmp_path / "i.mkv", light_level="input", **FAST)
    exact = hdrvideo.convert(sample_clip, tmp_path / "d.mkv", **FAST)
    # both are measured, the encoder input only misses compression overshoot around highlights
    assert 0 < fast.max_cll <= exact.max_cll * 1.02 + 1 and exact.max_cll <= fast.max_cll * 1.25
    assert read_mkv_hdr10(str(tmp_path / "i.mkv"))["max_cll"] == fast.max_cll
    with pytest.raises(hdrvideo.UsageError):
        hdrvideo.convert(sample_clip, tmp_path / "x.mkv", light_level="guess")


def test_flat_white_light_levels(tmp_path):
    clip = write_planes_clip(tmp_path / "white.mkv", [flat_planes(64, 36, (235, 128, 128))] * 2)
    report = hdrvideo.convert(clip, tmp_path / "white.hdr10.mp4", **FAST)
    assert report.max_cll in (203, 204) and report.max_fall in (203, 204)


# ---------------------------------------------------------------- streams and timing


def test_frame_count_and_vfr_timestamps_preserved(tmp_path):
    pts = [0, 40, 120, 160, 280, 300, 420, 460]  # ms, irregular
    frames = [flat_planes(64, 36, (16 + 20 * i, 128, 128)) for i in range(len(pts))]
    clip = write_planes_clip(tmp_path / "vfr.mkv", frames, pts=pts, time_base=Fraction(1, 1000))
    for ext in (".mp4", ".mkv"):
        out = tmp_path / f"vfr.hdr10{ext}"
        report = hdrvideo.convert(clip, out, **FAST)
        assert report.frames == len(pts)
        got = video_pts(out)
        assert len(got) == len(pts)
        assert np.allclose(np.array(got) - got[0], np.array(pts) / 1000.0, atol=1e-3)
        # frame order: luma increases with time
        lumas = [centre(y) for y, _, _ in decode_planes(out)]
        assert lumas == sorted(lumas)


def test_audio_copied_untouched(tmp_path, sample_clip):
    out = tmp_path / "out.mkv"
    report = hdrvideo.convert(sample_clip, out, **FAST)
    assert any(s.startswith("audio") for s in report.streams_copied)
    assert audio_packets(out) == audio_packets(sample_clip)


def test_start_and_duration_select_the_span_and_cut_audio(tmp_path):
    frames = [flat_planes(64, 36, (16 + 4 * i, 128, 128)) for i in range(48)]  # 2 s at 24 fps
    clip = write_planes_clip(tmp_path / "long.mkv", frames, audio_seconds=2.0)
    out = tmp_path / "cut.mp4"
    report = hdrvideo.convert(clip, out, start="00:00:00.5", duration="0.75", **FAST)
    assert report.frames == 18  # frames at t ∈ [0.5, 1.25)
    lumas = [centre(y) for y, _, _ in decode_planes(out)]
    assert len(lumas) == 18
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        audio_end = max(float((p.pts + p.duration) * a.time_base) for p in c.demux(a) if p.pts is not None)
    assert abs(audio_end - 0.75) <= 1024 / 48000 + 1e-3
    # the first kept frame is the one at 0.5 s (luma 16 + 4·12 → brighter than frame 0's output)
    first = decode_planes(write_planes_clip(tmp_path / "one.mkv", [frames[12]]))
    ref = hdrvideo.convert(tmp_path / "one.mkv", tmp_path / "one.hdr10.mkv", **FAST)
    assert ref.frames == 1 and first
    assert abs(lumas[0] - centre(decode_planes(tmp_path / "one.hdr10.mkv")[0][0])) <= 1


@pytest.mark.skipif(not has_tool("ffmpeg"), reason="ffmpeg (used only to author a subtitle stream) not installed")
def test_subtitles_copied(tmp_path, sample_clip):
    srt = tmp_path / "subs.srt"
    srt.write_text("1\n00:00:00,100 --> 00:00:00,800\nHello HDR\n", encoding="utf-8")
    src = tmp_path / "with_subs.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(sample_clip), "-i", str(srt), "-map", "0", "-map", "1",
                    "-c", "copy", "-metadata:s:s:0", "language=eng", str(src)], check=True)
    out = tmp_path / "out.mkv"
    report = hdrvideo.convert(src, out, **FAST)
    assert any(s.startswith("subtitle") for s in report.streams_copied)
    with av.open(str(out)) as c:
        subs = c.streams.subtitles
        assert len(subs) == 1 and subs[0].metadata.get("language") == "eng"
        payload = b"".join(bytes(p) for p in c.demux(subs[0]) if p.size)
    assert b"Hello HDR" in payload


# ---------------------------------------------------------------- scale


def test_user_preset_scale_and_box_fit(tmp_path):
    preset = tmp_path / "classic-x4.toml"
    preset.write_text('name = "classic-x4"\ndescription = "test"\nprocessor = "bt2408"\nscale = 4\n'
                      "target = [192, 100]\n", encoding="utf-8")
    clip = write_planes_clip(tmp_path / "in.mkv", [flat_planes(64, 36, (180, 128, 128))] * 2)
    out = tmp_path / "out.mkv"
    report = hdrvideo.convert(clip, out, preset=str(preset), **FAST)
    assert report.output_size == (178, 100)  # 256×144 fitted into 192×100, aspect kept, even
    y, cb, _ = decode_planes(out)[0]
    assert y.shape == (100, 178) and cb.shape == (50, 89)


# ---------------------------------------------------------------- bad input and safety


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        hdrvideo.convert(tmp_path / "missing.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        hdrvideo.convert(empty)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(InputError, match="not a readable media file"):
        hdrvideo.convert(text)
    odd = write_planes_clip(tmp_path / "odd.mkv", [flat_planes(63, 35, (100, 128, 128))])
    with pytest.raises(UnsupportedInputError, match="odd frame size"):
        hdrvideo.convert(odd)
    narrow = write_planes_clip(tmp_path / "narrow.mkv", [flat_planes(40, 36, (100, 128, 128))])
    with pytest.raises(UnsupportedInputError, match="at least 64"):
        hdrvideo.convert(narrow)


def test_audio_only_and_hdr_inputs_refused(tmp_path):
    audio = tmp_path / "tone.m4a"
    with av.open(str(audio), "w") as c:
        s = c.add_stream("aac", rate=48000, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = 48000, 0
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    with pytest.raises(UnsupportedInputError, match="no video stream"):
        hdrvideo.convert(audio)
    for trc, word in ((16, "PQ"), (18, "HLG")):
        hdr = write_planes_clip(tmp_path / f"hdr{trc}.mkv", [flat_planes(64, 36, (500, 512, 512), bits=10)],
                                pix_fmt="yuv420p10le", tags=(9, trc, 9, 1))
        with pytest.raises(UnsupportedInputError, match=f"already HDR.*{word}"):
            hdrvideo.convert(hdr)


def test_truncated_input_converts_what_decodes(tmp_path):
    frames = [flat_planes(64, 36, (60 + 5 * i, 128, 128)) for i in range(24)]
    clip = write_planes_clip(tmp_path / "full.mkv", frames)
    data = clip.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    report = hdrvideo.convert(cut, tmp_path / "cut.hdr10.mkv", **FAST)
    assert 5 <= report.frames < 24
    assert len(decode_planes(tmp_path / "cut.hdr10.mkv")) == report.frames
    assert len([w for w in report.warnings if w.startswith("input is truncated")]) == 1


def test_existing_output_needs_force_and_is_untouched(tmp_path, sample_clip):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError):
        hdrvideo.convert(sample_clip, out, **FAST)
    assert out.read_bytes() == b"precious"
    hdrvideo.convert(sample_clip, out, force=True, **FAST)
    assert out.read_bytes()[4:8] == b"ftyp"


def test_failure_and_interrupt_leave_no_files(tmp_path, sample_clip):
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def interrupt(event):
        if event.frame > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hdrvideo.convert(sample_clip, out_dir / "a.mp4", progress=interrupt, **FAST)
    assert list(out_dir.iterdir()) == []
    with pytest.raises(hdrvideo.UsageError):
        hdrvideo.convert(sample_clip, out_dir / "b.mp4", encoder="no_such_encoder")
    assert list(out_dir.iterdir()) == []


def test_nvenc_without_gpu_fails_before_work(tmp_path, sample_clip):
    import torch as _torch

    if _torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(hdrvideo.EncoderError, match="NVIDIA GPU"):
        hdrvideo.convert(sample_clip, tmp_path / "n.mp4", encoder="hevc_nvenc")
    assert not (tmp_path / "n.mp4").exists()


def test_default_output_name(tmp_path, sample_clip):
    report = hdrvideo.convert(sample_clip, **FAST)
    assert report.output == str(tmp_path / "sample.hdr10.mp4")
    assert os.path.exists(report.output)


def test_neural_preset_without_weights_fails_cleanly(tmp_path, sample_clip, monkeypatch):
    monkeypatch.setenv("HDRVIDEO_ENGINES", str(tmp_path / "no-engines"))
    monkeypatch.setattr("hdrvideo.presets.engines_dirs", lambda: [tmp_path / "no-engines"])
    with pytest.raises(WeightsMissingError, match="--weights"):
        hdrvideo.convert(sample_clip, tmp_path / "x.mp4", preset="itm-agcm")
    assert not (tmp_path / "x.mp4").exists()


def test_luma_adjust_option_reaches_the_packing(tmp_path):
    # saturated red columns on grey (lossless FFV1 source): with luma adjustment only Y' moves,
    # at the red edges; bt2408 packs plainly unless asked, hdr-expand adjusts unless told not to
    h, w = 32, 72
    y = np.full((h, w), 120, np.uint8)
    y[:, 5::6] = 60
    cb = np.full((h // 2, w // 2), 128, np.uint8)
    cr = np.full((h // 2, w // 2), 128, np.uint8)
    cr[:, 2::3] = 240
    src = write_planes_clip(tmp_path / "edges.mkv", [(y, cb, cr)] * 2)
    lossless = {"x265_preset": "ultrafast", "crf": 0.0}
    plain = decode_planes(hdrvideo.convert(src, tmp_path / "plain.mkv", preset="bt2408", **lossless).output)
    adjusted = decode_planes(hdrvideo.convert(src, tmp_path / "adj.mkv", preset="bt2408", luma_adjust=True,
                                              **lossless).output)
    assert np.array_equal(plain[0][1], adjusted[0][1]) and np.array_equal(plain[0][2], adjusted[0][2])
    assert int(np.abs(plain[0][0].astype(int) - adjusted[0][0].astype(int)).max()) >= 3
    expand = decode_planes(hdrvideo.convert(src, tmp_path / "x.mkv", preset="hdr-expand", **lossless).output)
    expand_plain = decode_planes(hdrvideo.convert(src, tmp_path / "xp.mkv", preset="hdr-expand", luma_adjust=False,
                                                  **lossless).output)
    assert not np.array_equal(expand[0][0], expand_plain[0][0])
