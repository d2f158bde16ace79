"""Delivery encoding (issue 13): GOP, rate control, two-pass, level, fragmented MP4, AAC audio,
stream selection, crop/pad-back — each measured on the output with ffprobe (and PyAV)."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import hdrvideo
from hdrvideo.errors import UsageError
from hdrvideo.media.hdr10_boxes import read_mp4_hdr10

from conftest import decode_planes, has_tool, write_h264_clip, write_planes_clip

FAST = {"x265_preset": "ultrafast"}
needs_ffprobe = pytest.mark.skipif(not has_tool("ffprobe"), reason="ffprobe not installed")


# ---------------------------------------------------------------- helpers


def ffprobe(path: Path, *args: str) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", *args, str(path)], capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout)


def video_frames(path: Path) -> list[dict]:
    """ffprobe's decoded video frames, in presentation order."""
    frames = ffprobe(path, "-select_streams", "v:0", "-show_entries", "frame=key_frame,pict_type,pts,pts_time")["frames"]
    return sorted(frames, key=lambda f: int(f["pts"]))


def video_packets(path: Path) -> list[dict]:
    return ffprobe(path, "-select_streams", "v:0", "-show_entries", "packet=pts,dts,dts_time,size,flags,pos")["packets"]


def noise_frames(w: int, h: int, n: int, seed: int = 0) -> list[tuple[np.ndarray, ...]]:
    """High-detail content: uniform noise over the whole limited range, new every frame."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(16, 236, (h, w), dtype=np.uint8), rng.integers(16, 241, (h // 2, w // 2), dtype=np.uint8),
             rng.integers(16, 241, (h // 2, w // 2), dtype=np.uint8)) for _ in range(n)]


def gradient_frames(w: int, h: int, n: int) -> list[tuple[np.ndarray, ...]]:
    """A moving diagonal gradient with colour: cheap to encode, different in every frame."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        y = (40 + (xx * 3 + yy * 2 + i * 5) % 180).astype(np.uint8)
        cb = np.full((h // 2, w // 2), 90 + (i * 7) % 80, np.uint8)
        cr = (100 + (xx[::2, ::2] + i) % 60).astype(np.uint8)
        out.append((y, cb, cr))
    return out


def nal_types(packet_bytes: bytes) -> list[int]:
    """HEVC NAL unit types of one MP4 sample (4-byte length prefixes)."""
    types, off = [], 0
    while off + 4 <= len(packet_bytes):
        (size,) = struct.unpack_from(">I", packet_bytes, off)
        types.append((packet_bytes[off + 4] >> 1) & 0x3F)
        off += 4 + size
    return types


def boxes(data: bytes, start: int = 0, end: int | None = None):
    end = len(data) if end is None else end
    off = start
    while off + 8 <= end:
        size, typ = struct.unpack_from(">I4s", data, off)
        size = size or end - off
        yield off, size, typ
        off += size


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hdrvideo.cli", *args], capture_output=True, text=True, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], proc.stderr


def bitrate(path: Path, stream: str) -> float:
    """Average bit/s of a stream: its packet bytes over its duration."""
    pk = ffprobe(path, "-select_streams", stream, "-show_entries", "packet=size,pts,duration_time,pts_time")["packets"]
    bits = 8 * sum(int(p["size"]) for p in pk)
    times = [float(p["pts_time"]) for p in pk]
    span = max(times) - min(times) + float(pk[-1].get("duration_time") or 0)
    return bits / span


# ---------------------------------------------------------------- GOP


@needs_ffprobe
def test_keyint_48_closed_gop_exact_keyframes_no_leading_pictures(tmp_path):
    src = write_planes_clip(tmp_path / "in.mkv", gradient_frames(96, 64, 130))
    out = tmp_path / "out.mp4"
    report = hdrvideo.convert(src, out, keyint=48, closed_gop=True, **FAST)
    frames = video_frames(out)
    assert report.frames == len(frames) == 130
    keys = [i for i, f in enumerate(frames) if f["key_frame"] == 1]
    assert keys == [0, 48, 96]
    assert all(frames[i]["pict_type"] == "I" for i in keys)
    # closed: every keyframe is an IDR and no picture is a RASL (a leading picture that references
    # across the keyframe); x265's settings SEI says no-open-gop and keyint=min-keyint=48
    with av.open(str(out)) as c:
        samples = [(bytes(p), p.is_keyframe) for p in c.demux(video=0) if p.size]
    for data, key in samples:
        types = nal_types(data)
        assert not {8, 9} & set(types)
        if key:
            assert {19, 20} & set(types) and 21 not in types  # IDR, never CRA
    settings = samples[0][0]
    assert b"no-open-gop" in settings and b"min-keyint=48" in settings and b"keyint=48" in settings


@needs_ffprobe
def test_keyint_open_gop_and_seconds(tmp_path):
    src = write_planes_clip(tmp_path / "in.mkv", gradient_frames(64, 36, 40))
    out = tmp_path / "out.mp4"
    hdrvideo.convert(src, out, keyint="0.5s", **FAST)  # 24 fps → 12 frames
    keys = [i for i, f in enumerate(video_frames(out)) if f["key_frame"] == 1]
    assert keys == [0, 12, 24, 36]


@needs_ffprobe
def test_chunks_keep_the_gop_grid_of_a_one_piece_encode(tmp_path):
    # the source's own GOP (30, with B-frames) does not line up with the output's (24)
    src = write_planes_clip(tmp_path / "in.mp4", gradient_frames(64, 36, 100), codec="libx264",
                            options={"preset": "ultrafast", "x264-params": "keyint=30:min-keyint=30:scenecut=0:bframes=2"})
    out = tmp_path / "out.mp4"
    report = hdrvideo.convert_chunked(src, out, chunks=3, workers=1, keyint=24, closed_gop=True, **FAST)
    assert len(report.chunks) == 3 and [c["frames"] % 24 for c in report.chunks[:-1]] == [0, 0]
    frames = video_frames(out)
    assert len(frames) == 100
    assert [i for i, f in enumerate(frames) if f["key_frame"] == 1] == [0, 24, 48, 72, 96]
    with av.open(str(src)) as c:
        src_pts = sorted(float(p.pts * p.time_base) for p in c.demux(video=0) if p.size)
    assert [round(float(f["pts_time"]), 4) for f in frames] == [round(t - src_pts[0], 4) for t in src_pts]


# ---------------------------------------------------------------- rate control


@needs_ffprobe
def test_vbv_maxrate_bufsize_bound_holds_on_every_window(tmp_path):
    fps, seconds = 24, 5
    src = write_planes_clip(tmp_path / "noise.mkv", noise_frames(160, 96, seconds * fps), rate=fps)
    free, out = tmp_path / "free.mp4", tmp_path / "out.mp4"
    hdrvideo.convert(src, free, crf=8, **FAST)
    assert bitrate(free, "v:0") > 2.5e6  # without the cap this content takes more than 2 Mbit/s
    hdrvideo.convert(src, out, crf=8, maxrate="2M", bufsize="4M", **FAST)
    pk = sorted(video_packets(out), key=lambda p: int(p["dts"]))
    t = np.array([float(p["dts_time"]) for p in pk])
    bits = np.array([8 * int(p["size"]) for p in pk], float)
    assert len(pk) == seconds * fps
    for T in (1, 2, 4):
        for i in range(len(t)):
            in_window = bits[(t >= t[i]) & (t < t[i] + T)].sum()
            assert in_window <= 2e6 * T + 4e6, (T, i, in_window)
    assert 1.8e6 <= bits.sum() / seconds <= 2e6  # the cap binds, and the file averages within it


@needs_ffprobe
def test_two_pass_meets_the_average_bitrate(tmp_path):
    fps = 24
    src = write_planes_clip(tmp_path / "noise.mkv", noise_frames(160, 96, 4 * fps, seed=1), rate=fps)
    out = tmp_path / "out.mp4"
    report = hdrvideo.convert(src, out, two_pass=True, bitrate="3M", **FAST)
    assert report.stage_seconds["encode"] > 0
    rate = bitrate(out, "v:0")
    assert abs(rate - 3e6) <= 0.05 * 3e6, rate


def test_two_pass_plane_cache_is_lossless(tmp_path):
    """The cached second pass encodes exactly the planes a recomputed one does."""
    src = write_planes_clip(tmp_path / "in.mkv", gradient_frames(64, 36, 10))
    outs = []
    for mode in ("planes", "recompute"):
        outs.append(tmp_path / f"{mode}.mkv")
        hdrvideo.convert(src, outs[-1], two_pass=True, bitrate="500k", two_pass_cache=mode, **FAST)
    a, b = decode_planes(outs[0]), decode_planes(outs[1])
    assert len(a) == len(b) == 10
    assert all(np.array_equal(p, q) for fa, fb in zip(a, b) for p, q in zip(fa, fb))
    assert not list(tmp_path.glob(".*hdrvideo-tmp"))


def test_rate_and_option_errors(tmp_path):
    src = write_planes_clip(tmp_path / "in.mkv", gradient_frames(64, 36, 2))
    for kwargs, needle in [
        ({"bitrate": "fast"}, "invalid bitrate"),
        ({"maxrate": "2M"}, "go together"),
        ({"two_pass": True}, "needs --bitrate"),
        ({"bitrate": "3M", "crf": 20}, "exclude each other"),
        ({"keyint": "-3"}, "invalid --keyint"),
        ({"x265_params": "master-display=G(1,1)"}, "HDR10 signalling"),
        ({"x265_params": "keyint=10"}, "use --keyint"),
        ({"x265_params": "nonsense-key=1"}, "no such parameter"),
        ({"fragmented": True}, "MP4/MOV"),
        ({"audio": "mp3"}, "unknown audio mode"),
    ]:
        with pytest.raises(UsageError, match=needle):
            hdrvideo.convert(src, tmp_path / "o.mkv", **kwargs)
    assert not list(tmp_path.glob("o.*"))


@needs_ffprobe
def test_x265_params_are_merged_with_hdr10(tmp_path):
    src = write_planes_clip(tmp_path / "in.mkv", gradient_frames(64, 36, 3))
    out = tmp_path / "out.mp4"
    hdrvideo.convert(src, out, x265_params="no-sao:aq-mode=3", **FAST)
    with av.open(str(out)) as c:
        first = next(bytes(p) for p in c.demux(video=0) if p.size)
    assert b"no-sao" in first and b"aq-mode=3" in first and b"master-display" in first
    side = ffprobe(out, "-show_streams", "-select_streams", "v:0")["streams"][0]["side_data_list"]
    assert {"Mastering display metadata", "Content light level metadata"} <= {s["side_data_type"] for s in side}
    proc = cli("convert", str(src), "-o", str(tmp_path / "x.mp4"), "--x265-params", "colorprim=bt709")
    assert_one_line_error(proc, "HDR10 signalling")


# ---------------------------------------------------------------- level


@needs_ffprobe
def test_level_5_1_in_the_sps_and_impossible_levels_refused(tmp_path):
    src = write_planes_clip(tmp_path / "in.mkv", gradient_frames(64, 36, 3))
    out = tmp_path / "out.mp4"
    hdrvideo.convert(src, out, level="5.1", **FAST)
    assert ffprobe(out, "-show_streams", "-select_streams", "v:0")["streams"][0]["level"] == 153
    big = write_planes_clip(tmp_path / "big.mkv", [(np.full((576, 1024), 60, np.uint8),
                                                    np.full((288, 512), 128, np.uint8),
                                                    np.full((288, 512), 128, np.uint8))])
    assert_one_line_error(cli("convert", str(big), "--level", "2.1"), "cannot hold 1024×576")
    with pytest.raises(UsageError, match="at most 1.65 Mbit/s"):
        hdrvideo.convert(src, tmp_path / "o.mp4", level="2", maxrate="3M", bufsize="1M")
    with pytest.raises(UsageError, match="luma samples/s"):  # 64×40 × 24 fps fits level 1 in size, not in rate
        hdrvideo.convert(write_planes_clip(tmp_path / "fast.mkv", gradient_frames(64, 36, 2), rate=240,
                                           time_base=Fraction(1, 240)), tmp_path / "o.mp4", level="1")


# ---------------------------------------------------------------- fragmented MP4


@needs_ffprobe
def test_fragmented_mp4_fragments_on_keyframes_with_hdr10_in_moov(tmp_path, sample_clip):
    out = tmp_path / "out.mp4"
    report = hdrvideo.convert(sample_clip, out, fragmented=True, keyint=6, closed_gop=True, **FAST)
    data = out.read_bytes()
    top = [(off, typ) for off, _s, typ in boxes(data)]
    assert [t for _o, t in top][:2] == [b"ftyp", b"moov"]
    moofs = [off for off, typ in top if typ == b"moof"]
    assert len(moofs) == 4  # 24 frames, a keyframe every 6
    # every fragment starts with a video keyframe (ffprobe: the first video packet after each moof)
    pk = video_packets(out)
    for off in moofs:
        first = min((p for p in pk if int(p["pos"]) > off), key=lambda p: int(p["pos"]))
        assert first["flags"].startswith("K")
    # the sample entry in the (sample-less) moov carries hvc1, colr, mdcv and clli: measured values
    hdr = read_mp4_hdr10(str(out))
    assert (hdr["max_cll"], hdr["max_fall"]) == (report.max_cll, report.max_fall) and report.max_cll > 0
    assert hdr["colour_primaries"] == 9 and hdr["transfer_characteristics"] == 16 and b"hvc1" in data[:4096]
    stream = ffprobe(out, "-show_streams", "-select_streams", "v:0")["streams"][0]
    assert stream["codec_tag_string"] == "hvc1" and stream["color_transfer"] == "smpte2084"
    cll = next(s for s in stream["side_data_list"] if s["side_data_type"] == "Content light level metadata")
    assert (cll["max_content"], cll["max_average"]) == (report.max_cll, report.max_fall)
    assert abs(float(stream["start_time"])) < 1e-6  # the B-frame delay is in the edit list
    if has_tool("mediainfo"):
        info = subprocess.run(["mediainfo", str(out)], capture_output=True, text=True, check=True).stdout
        assert "SMPTE ST 2086, HDR10 compatible" in info
        assert re.search(rf"Maximum Content Light Level\s+: {report.max_cll}\b", info)
        assert re.search(rf"Maximum Frame-Average Light Level\s+: {report.max_fall}\b", info)


# ---------------------------------------------------------------- audio


def write_av(path: Path, frames: list[tuple[np.ndarray, ...]], audio: list[tuple[np.ndarray, str, str | None]],
             fps: int = 24, sr: int = 48000, container_format: str | None = None) -> Path:
    """FFV1 video + audio streams, each given as (float samples (ch, n), codec, language)."""
    h, w = frames[0][0].shape
    out = av.open(str(path), "w", format=container_format)
    vs = out.add_stream("ffv1", rate=fps)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    streams = []
    for samples, codec, lang in audio:
        a = out.add_stream(codec, rate=sr, layout="stereo" if samples.shape[0] == 2 else "mono")
        if codec == "vorbis":
            a.options = {"strict": "experimental"}
        if lang:
            a.metadata["language"] = lang
        streams.append((a, samples))
    for i, planes in enumerate(frames):
        f = av.VideoFrame(w, h, "yuv420p")
        for plane, src in zip(f.planes, planes):
            np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : src.shape[1]] = src
        f.pts = i
        for p in vs.encode(f):
            out.mux(p)
    for p in vs.encode(None):
        out.mux(p)
    for a, samples in streams:
        layout = "stereo" if samples.shape[0] == 2 else "mono"
        for start in range(0, samples.shape[1], 1024):
            chunk = np.ascontiguousarray(samples[:, start : start + 1024].astype(np.float32))
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            af.sample_rate, af.pts, af.time_base = sr, start, Fraction(1, sr)
            for p in a.encode(af):
                out.mux(p)
        for p in a.encode(None):
            out.mux(p)
    out.close()
    return path


def music(seconds: float, sr: int = 48000, seed: int = 0) -> np.ndarray:
    """Stereo test signal that keeps an AAC encoder busy: chords plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    tone = sum(0.08 * np.sin(2 * np.pi * f * t) for f in (220, 277, 330, 440, 1250, 3100))
    return np.stack([tone + 0.05 * rng.standard_normal(t.size), tone + 0.05 * rng.standard_normal(t.size)])


@needs_ffprobe
def test_audio_aac_at_the_requested_bitrate(tmp_path):
    src = write_av(tmp_path / "in.mkv", gradient_frames(64, 36, 96), [(music(4.0), "flac", "eng")])
    out = tmp_path / "out.mp4"
    report = hdrvideo.convert(src, out, audio="aac", audio_bitrate="128k", **FAST)
    streams = ffprobe(out, "-show_streams", "-select_streams", "a")["streams"]
    assert len(streams) == 1 and streams[0]["codec_name"] == "aac" and streams[0]["tags"]["language"] == "eng"
    rate = bitrate(out, "a:0")
    assert 0.9 * 128e3 <= rate <= 1.1 * 128e3, rate
    assert report.streams_copied == ["audio #1 flac → aac 128 kbit/s"]


def burst_clip(path: Path, seconds: float, at: float, fps: int = 24, sr: int = 48000) -> Path:
    """Dark video with one bright frame at ``at`` and a 1 kHz burst starting at ``at`` (FLAC in MKV)."""
    n = int(seconds * fps)
    frames = [(np.full((36, 64), 235 if i == round(at * fps) else 30, np.uint8),
               np.full((18, 32), 128, np.uint8), np.full((18, 32), 128, np.uint8)) for i in range(n)]
    audio = np.zeros((2, int(seconds * sr)))
    k = int(at * sr)
    audio[:, k : k + sr // 50] = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(sr // 50) / sr)
    return write_av(path, frames, [(audio, "flac", None)], fps=fps, sr=sr)


def flash_and_burst(path: Path) -> tuple[float, float, float]:
    """(bright frame time, burst onset time, audio start time) as decoded from ``path``."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        flash = next(float(f.pts * vs.time_base) for f in c.decode(vs) if f.to_ndarray(format="gray")[18, 32] > 100)
    with av.open(str(path)) as c:
        start, onset = None, None
        for f in c.decode(audio=0):
            t = float(f.pts * f.time_base)
            start = t if start is None else start
            x = np.abs(f.to_ndarray()[0])
            hit = np.nonzero(x > 0.1)[0]
            if onset is None and hit.size:
                onset = t + hit[0] / f.sample_rate
    return flash, onset, start


@needs_ffprobe
def test_flac_in_mkv_to_mp4_aac_stays_in_sync(tmp_path):
    src = burst_clip(tmp_path / "in.mkv", 3.0, at=1.5)
    frame = 1024 / 48000
    out = tmp_path / "out.mp4"
    hdrvideo.convert(src, out, audio="aac", **FAST)
    flash, onset, start = flash_and_burst(out)
    assert abs(flash - 1.5) < 1e-6 and abs(onset - flash) < frame, (flash, onset)
    streams = ffprobe(out, "-show_streams")["streams"]
    a_start = float(next(s for s in streams if s["codec_type"] == "audio")["start_time"])
    v_start = float(next(s for s in streams if s["codec_type"] == "video")["start_time"])
    assert abs(a_start - v_start) <= frame and abs(start) <= frame
    # a --start cut is sample-exact on transcoded audio: the burst moves with the picture
    cut = tmp_path / "cut.mp4"
    hdrvideo.convert(src, cut, audio="aac", start=0.5, fragmented=True, **FAST)
    flash, onset, start = flash_and_burst(cut)
    assert abs(flash - 1.0) < 1e-6 and abs(onset - flash) < frame and abs(start) <= frame


def test_vorbis_into_mp4_is_transcoded_with_a_warning(tmp_path):
    src = write_av(tmp_path / "in.mkv", gradient_frames(64, 36, 12), [(music(0.5), "vorbis", None)])
    out = tmp_path / "out.mp4"
    report = hdrvideo.convert(src, out, **FAST)  # --audio copy (default)
    assert any("vorbis" in w and "no standard mapping in mp4" in w and "AAC" in w for w in report.warnings)
    with av.open(str(out)) as c:
        assert [s.codec_context.name for s in c.streams.audio] == ["aac"]
    kept = tmp_path / "out.mkv"  # Matroska holds Vorbis: copied untouched
    assert hdrvideo.convert(src, kept, **FAST).streams_copied == ["audio #1 vorbis"]


def test_audio_and_subtitle_stream_selection(tmp_path):
    src = write_av(tmp_path / "in.mkv", gradient_frames(64, 36, 12),
                   [(music(0.5, seed=1), "flac", "eng"), (music(0.5, seed=2), "flac", "fre"),
                    (music(0.5, seed=3), "flac", "ger")])
    out = tmp_path / "out.mkv"
    report = hdrvideo.convert(src, out, audio_streams="ger,2,spa", **FAST)
    with av.open(str(out)) as c:
        assert [s.metadata.get("language") for s in c.streams.audio] == ["ger", "fre"]
    assert "no audio stream in language 'spa'" in report.warnings
    with av.open(str(src)) as c:
        ger = [bytes(p) for p in c.demux(audio=2) if p.size]
    with av.open(str(out)) as c:
        assert [bytes(p) for p in c.demux(audio=0) if p.size] == ger  # copied untouched
    none = tmp_path / "none.mkv"
    hdrvideo.convert(src, none, audio_streams="none", **FAST)
    with av.open(str(none)) as c:
        assert not c.streams.audio
    with pytest.raises(UsageError, match="not one of the input's audio streams"):
        hdrvideo.convert(src, tmp_path / "bad.mkv", audio_streams="0", **FAST)


@pytest.mark.skipif(not has_tool("ffmpeg"), reason="ffmpeg (used only to author subtitle streams) not installed")
def test_subtitle_streams_by_language(tmp_path):
    base = write_av(tmp_path / "base.mkv", gradient_frames(64, 36, 12), [])
    subs = []
    for lang in ("eng", "fre"):
        srt = tmp_path / f"{lang}.srt"
        srt.write_text(f"1\n00:00:00,100 --> 00:00:00,400\nHello {lang}\n", encoding="utf-8")
        subs += ["-i", str(srt)]
    src = tmp_path / "subs.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(base), *subs, "-map", "0", "-map", "1", "-map", "2", "-c", "copy",
                    "-metadata:s:s:0", "language=eng", "-metadata:s:s:1", "language=fre", str(src)], check=True)
    out = tmp_path / "out.mkv"
    hdrvideo.convert(src, out, subtitle_streams="fre", **FAST)
    with av.open(str(out)) as c:
        assert [s.metadata.get("language") for s in c.streams.subtitles] == ["fre"]


ASS_HEADER = (b"[Script Info]\nScriptType: v4.00+\n\n[V4+ Styles]\nFormat: Name, Fontname, Fontsize, PrimaryColour, "
              b"SecondaryColour, OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, "
              b"Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n"
              b"Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n\n"
              b"[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n")


def write_subtitled(path: Path, events: list[tuple[int, int, str]], frames: int = 25, codec: str = "subrip") -> Path:
    """``frames`` 25 fps frames and one ``codec`` text subtitle stream (English) of (start ms, end ms, text)."""
    from av.subtitles.subtitle import SubtitleSet

    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        s = out.add_stream(codec)
        s.time_base = Fraction(1, 1000)
        s.codec_context.subtitle_header = ASS_HEADER
        s.metadata["language"] = "eng"
        pending = sorted(events)
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 + 4 * i, np.uint8), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 25)
            for p in v.encode(f):
                out.mux(p)
            while pending and pending[0][0] <= i * 40:
                t0, t1, text = pending.pop(0)
                p = s.codec_context.encode_subtitle(SubtitleSet.create(f"0,0,Default,,0,0,0,,{text}".encode(), 0, t1 - t0))
                p.pts = p.dts = t0
                p.duration = t1 - t0
                p.stream = s
                out.mux(p)
        for p in v.encode(None):
            out.mux(p)
    return path


def subtitle_events(path: Path) -> tuple[str, list[tuple[int, int, str]]]:
    """(codec, [(start ms, end ms, text)]) of the first subtitle stream."""
    with av.open(str(path)) as c:
        s = c.streams.subtitles[0]
        events = []
        for p in c.demux(s):
            if not p.size:
                continue
            t0 = round(p.pts * s.time_base * 1000)
            text = " ".join(sub.dialogue.decode() for sub in p.decode())
            events.append((t0, t0 + round(p.duration * s.time_base * 1000), text))
        return s.codec_context.name, events


def test_text_subtitles_change_codec_to_fit_the_container(tmp_path):
    """SubRip cannot go into MP4, nor MP4's timed text into MKV: each becomes the other's text codec."""
    src = write_subtitled(tmp_path / "in.mkv", [(0, 400, "Line one"), (480, 880, "Line two")])
    mp4 = tmp_path / "out.mp4"
    report = hdrvideo.convert(src, mp4, **FAST)
    assert "subtitle #1 srt → mov_text" in report.streams_copied  # FFmpeg's SubRip decoder is "srt"
    assert not [w for w in report.warnings if "subtitle" in w]
    codec, events = subtitle_events(mp4)
    assert codec == "mov_text" and [e for e in events if e[2]] == [(0, 400, "Line one"), (480, 880, "Line two")]
    with av.open(str(mp4)) as c:
        assert c.streams.subtitles[0].metadata.get("language") == "eng"
    timed_text = write_subtitled(tmp_path / "in.mp4", [(0, 400, "Line one"), (480, 880, "Line two")], codec="mov_text")
    back = tmp_path / "back.mkv"
    hdrvideo.convert(timed_text, back, **FAST)
    codec, events = subtitle_events(back)
    assert codec in ("subrip", "srt") and [e for e in events if e[2]] == [(0, 400, "Line one"), (480, 880, "Line two")]
    # a --start cut shortens the event it falls in and moves the rest onto the output timeline
    cut = tmp_path / "cut.mp4"
    hdrvideo.convert(src, cut, start="0.2", **FAST)
    assert [e for e in subtitle_events(cut)[1] if e[2]] == [(0, 200, "Line one"), (280, 680, "Line two")]


# ---------------------------------------------------------------- crop and pad-back


def letterboxed(w: int, h: int, top: int, bottom: int, frames: list[tuple[np.ndarray, ...]]):
    """Put pictures into a w×h frame with black (Y′16, Cb/Cr 128) bars above and below."""
    out = []
    for y, cb, cr in frames:
        fy = np.full((h, w), 16, np.uint8)
        fc = [np.full((h // 2, w // 2), 128, np.uint8) for _ in range(2)]
        fy[top : h - bottom] = y
        fc[0][top // 2 : (h - bottom) // 2] = cb
        fc[1][top // 2 : (h - bottom) // 2] = cr
        out.append((fy, fc[0], fc[1]))
    return out


def scenes(w: int, h: int) -> list[tuple[np.ndarray, ...]]:
    """A fade from black, a dark scene whose top rows are black too, then a bright picture."""
    black = (np.full((h, w), 16, np.uint8), np.full((h // 2, w // 2), 128, np.uint8),
             np.full((h // 2, w // 2), 128, np.uint8))
    dark = gradient_frames(w, h, 8)
    for y, _cb, _cr in dark:
        y[:] = 16 + (y - 40) // 12
        y[:6] = 17  # black to the top edge in this scene
    return [black] * 8 + dark + gradient_frames(w, h, 32)


LOSSLESS = {"x265_params": "lossless=1", **FAST}


def test_crop_auto_removes_letterbox_bars(tmp_path):
    picture = scenes(96, 40)
    src = write_planes_clip(tmp_path / "lb.mkv", letterboxed(96, 64, 12, 12, picture))
    ref = write_planes_clip(tmp_path / "pic.mkv", picture)
    out, want = tmp_path / "out.mkv", tmp_path / "want.mkv"
    report = hdrvideo.convert(src, out, crop="auto", **LOSSLESS)
    hdrvideo.convert(ref, want, **LOSSLESS)
    assert report.crop == "96:40:0:12" and report.output_size == (96, 40)
    a, b = decode_planes(out), decode_planes(want)
    assert len(a) == len(b) == 48
    assert all(np.array_equal(p, q) for fa, fb in zip(a, b) for p, q in zip(fa, fb))  # the picture, exactly


def test_pad_back_restores_exactly_black_bars(tmp_path):
    picture = scenes(96, 40)
    src = write_planes_clip(tmp_path / "lb.mkv", letterboxed(96, 64, 12, 12, picture))
    cropped, padded = tmp_path / "cropped.mkv", tmp_path / "padded.mkv"
    hdrvideo.convert(src, cropped, crop="auto", **LOSSLESS)
    report = hdrvideo.convert(src, padded, crop="auto", pad_back=True, **LOSSLESS)
    assert report.output_size == (96, 64)
    for (y, cb, cr), (py, pcb, pcr) in zip(decode_planes(padded), decode_planes(cropped)):
        assert (y[:12] == 64).all() and (y[52:] == 64).all()
        assert (cb[:6] == 512).all() and (cb[26:] == 512).all() and (cr[:6] == 512).all() and (cr[26:] == 512).all()
        assert np.array_equal(y[12:52], py) and np.array_equal(cb[6:26], pcb) and np.array_equal(cr[6:26], pcr)
    # lossy: bars of whole coding-tree blocks (32 rows for ultrafast) come out exactly black, up to
    # the 3 rows next to the picture that the deblocking filter may touch
    src = write_planes_clip(tmp_path / "lb32.mkv", letterboxed(96, 128, 32, 32, scenes(96, 64)))
    lossy = tmp_path / "lossy.mkv"
    hdrvideo.convert(src, lossy, crop="96:64:0:32", pad_back=True, **FAST)
    for y, cb, cr in decode_planes(lossy):
        assert (y[:29] == 64).all() and (y[99:] == 64).all()
        assert all((c[:14] == 512).all() and (c[50:] == 512).all() for c in (cb, cr))


def test_crop_detection_rules():
    from hdrvideo.media.crop import frame_bars

    luma = np.full((40, 60), 16, np.uint16)
    luma[10:30, 4:56] = 120
    luma[0, 7] = 200  # one hot pixel in a bar row (noise) does not end the bar
    assert frame_bars(luma, 16, 8) == (10, 10, 4, 4)
    assert frame_bars(np.full((40, 60), 20, np.uint16), 16, 8) is None  # black frame: no information


def test_crop_errors_are_one_line(tmp_path):
    src = write_planes_clip(tmp_path / "in.mkv", gradient_frames(64, 36, 2))
    assert_one_line_error(cli("convert", str(src), "--crop", "32:20:3:2"), "multiples of 2")
    for crop, needle in (("64:40:0:0", "does not fit"), ("big", "W:H:X:Y"), ("33:20:0:0", "even")):
        with pytest.raises(UsageError, match=needle):
            hdrvideo.convert(src, tmp_path / "o.mkv", crop=crop)


# ---------------------------------------------------------------- presets and batch manifests


@needs_ffprobe
def test_preset_encode_keys_and_batch_manifest(tmp_path):
    from hdrvideo.farm.batch import load_manifest

    src = write_av(tmp_path / "in.mkv", gradient_frames(64, 36, 30), [(music(1.25), "flac", "eng")])
    preset = tmp_path / "hls.toml"
    preset.write_text('name = "hls"\ndescription = "x"\nprocessor = "bt2408"\n[encode]\nx265_preset = "ultrafast"\n'
                      'keyint = 10\nclosed_gop = true\nfragmented = true\naudio = "aac"\naudio_bitrate = "96k"\n'
                      'level = "4.1"\n', encoding="utf-8")
    manifest = tmp_path / "jobs.csv"
    manifest.write_text(f"input,output,preset,keyint,audio,crop\nin.mkv,a.mp4,{preset},15,,\n"
                        f"in.mkv,b.mp4,{preset},,none,auto\n", encoding="utf-8")
    jobs = load_manifest(manifest)
    assert jobs[0].options == {"keyint": 15} and jobs[1].options == {"audio": "none", "crop": "auto"}
    for job in jobs:
        job.run()
    with av.open(str(tmp_path / "a.mp4")) as c:
        keys = [i for i, f in enumerate(c.decode(video=0)) if f.key_frame]
    with av.open(str(tmp_path / "a.mp4")) as c:
        assert keys == [0, 15] and c.streams.audio[0].codec_context.name == "aac"
    assert ffprobe(tmp_path / "a.mp4", "-show_streams", "-select_streams", "v:0")["streams"][0]["level"] == 123
    data = (tmp_path / "b.mp4").read_bytes()
    assert b"moof" in data
    with av.open(str(tmp_path / "b.mp4")) as c:
        assert not c.streams.audio and [i for i, f in enumerate(c.decode(video=0)) if f.key_frame] == [0, 10, 20]


# ---------------------------------------------------------------- chapters and tags


CHAPTERS = [(0, 1000, "Opening"), (1000, 1600, "Middle"), (1600, 2000, "End")]  # ms


def with_chapters(src: Path, path: Path, chapters=CHAPTERS, tags: dict[str, str] | None = None) -> Path:
    """``src``'s packets remuxed into ``path`` with ``chapters`` (start ms, end ms, title) and
    container ``tags``; FFmpeg's mov muxer stores MP4 chapters as a QuickTime text track."""
    with av.open(str(src)) as c, av.open(str(path), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in c.streams}
        out.set_chapters([{"id": i + 1, "start": a, "end": b, "time_base": Fraction(1, 1000),
                           "metadata": {"title": t}} for i, (a, b, t) in enumerate(chapters)])
        for key, value in (tags or {}).items():
            out.metadata[key] = value
        for p in c.demux():
            if p.dts is None:
                continue
            p.stream = streams[p.stream.index]
            out.mux(p)
    return path


def chapter_list(path: Path) -> list[tuple[float, float, str]]:
    with av.open(str(path)) as c:
        return [(round(float(ch["start"] * ch["time_base"]), 3), round(float(ch["end"] * ch["time_base"]), 3),
                 ch["metadata"].get("title")) for ch in c.chapters()]


@pytest.mark.parametrize("src_ext,out_ext", [(".mp4", ".mp4"), (".mkv", ".mkv"), (".mp4", ".mov")])
def test_chapters_and_tags_are_carried(tmp_path, src_ext, out_ext):
    clip = write_h264_clip(tmp_path / "clip.mp4", 50, size=(64, 48), audio_seconds=2.0)
    src = with_chapters(clip, tmp_path / f"src{src_ext}", tags={"title": "A Film", "artist": "Someone",
                                                                 "comment": "reel 1"})
    assert chapter_list(src) == [(0.0, 1.0, "Opening"), (1.0, 1.6, "Middle"), (1.6, 2.0, "End")]
    out = tmp_path / f"out{out_ext}"
    report = hdrvideo.convert(src, out, **FAST)
    with av.open(str(src)) as c:  # Matroska's muxer delays the video by the AAC priming, not the chapters
        v0 = float(c.streams.video[0].start_time * c.streams.video[0].time_base)
    assert chapter_list(out) == [(max(round(a - v0, 3), 0.0), round(b - v0, 3), t) for a, b, t in chapter_list(src)]
    assert "3 chapters" in report.streams_copied
    assert not [w for w in report.warnings if "stream" in w]  # MP4 chapter text track: not "skipped"
    with av.open(str(out)) as c:
        tags = {k.lower(): v for k, v in c.metadata.items()}
        assert (tags["title"], tags["artist"], tags["comment"]) == ("A Film", "Someone", "reel 1")
        assert len(c.streams.audio) == 1
    from hdrvideo.media.probe import probe

    info = probe(out)
    assert [(round(ch.start, 3), ch.title) for ch in info.chapters] == [(a, t) for a, _b, t in chapter_list(out)]
    assert [s.detail for s in info.streams if s.type == "data"] == (["chapter titles"] if out_ext != ".mkv" else [])


def test_chapters_follow_a_start_cut_and_chunks(tmp_path):
    clip = write_h264_clip(tmp_path / "clip.mp4", 50, size=(64, 48))
    src = with_chapters(clip, tmp_path / "src.mkv")
    cut = tmp_path / "cut.mkv"
    hdrvideo.convert(src, cut, start=1.2, **FAST)
    assert chapter_list(cut) == [(0.0, 0.4, "Middle"), (0.4, 0.8, "End")]  # Opening ended before the cut
    from hdrvideo.farm.chunks import convert_chunked

    joined = tmp_path / "joined.mp4"
    report = convert_chunked(src, joined, chunks=2, workers=1, **FAST)
    assert chapter_list(joined) == chapter_list(src)
    assert "3 chapters" in report.streams_copied


def test_window_chapters_cut_shift_and_renumber():
    from hdrvideo.media.mux import StreamWindow, window_chapters

    tb = Fraction(1, 1000)
    chapters = [{"id": 7, "start": a, "end": b, "time_base": tb, "metadata": {"title": t}} for a, b, t in CHAPTERS]
    same = window_chapters(chapters, StreamWindow(offset=Fraction(0)))
    assert [(c["id"], c["start"], c["end"], c["metadata"]["title"]) for c in same] == \
        [(1, 0, 1000, "Opening"), (2, 1000, 1600, "Middle"), (3, 1600, 2000, "End")]
    # a window of source 0.5–1.3 s that starts the output at 0.5 s: Opening cut, Middle cut, End gone
    part = window_chapters(chapters, StreamWindow(offset=Fraction(1, 2), start=Fraction(1, 2), end=Fraction(13, 10)))
    assert [(c["start"], c["end"], c["metadata"]["title"]) for c in part] == [(0, 500, "Opening"), (500, 800, "Middle")]
    # a source whose timeline starts at 10 s (a transport stream): chapters move with it
    late = window_chapters([{**chapters[0], "start": 10_000, "end": 11_000}], StreamWindow(offset=Fraction(10)))
    assert (late[0]["start"], late[0]["end"]) == (0, 1000)
