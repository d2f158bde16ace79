"""Shared test helpers: tiny clips made with PyAV (no downloads), plane-exact decoding."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Flat-colour correctness targets of the core-pipeline issue: 8-bit limited BT.709 Y'CbCr in,
# the 10-bit limited BT.2020 PQ Y'CbCr FFmpeg's `zscale … npl=203` chain gives, and tolerances.
TARGETS = [
    ((235, 128, 128), (573, 512, 512), 1),  # white
    ((126, 128, 128), (429, 512, 512), 1),  # grey (Y' ±1 asserted; chroma neutral)
    ((63, 102, 240), (392, 438, 608), 2),  # red
]


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests run tiny frames: one intra-op thread avoids oversubscription on busy 2-core CI."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def has_tool(name: str) -> bool:
    return shutil.which(name) is not None


def _mux_tone(out, stream, seconds: float) -> None:
    """``seconds`` of a 440 Hz stereo tone (48 kHz) encoded into ``stream`` of ``out``."""
    n = int(seconds * 48000)
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / 48000)).astype(np.float32)
    for start in range(0, n - 1023, 1024):
        chunk = tone[start : start + 1024]
        af = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
        af.sample_rate, af.pts, af.time_base = 48000, start, Fraction(1, 48000)
        for p in stream.encode(af):
            out.mux(p)
    for p in stream.encode(None):
        out.mux(p)


def write_planes_clip(
    path: str | Path,
    frames: list[tuple[np.ndarray, ...]],
    pix_fmt: str = "yuv420p",
    *,
    tags: tuple[int, int, int, int] | None = (1, 1, 1, 1),  # primaries, trc, matrix, range
    codec: str = "ffv1",
    pts: list[int] | None = None,
    time_base: Fraction = Fraction(1, 24),
    rate: int = 24,
    audio_seconds: float = 0.0,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode frames given as raw planes (exact codes; FFV1 is lossless) into ``path``."""
    path = Path(path)
    h, w = frames[0][0].shape
    out = av.open(str(path), "w")
    try:
        vs = out.add_stream(codec, rate=rate)
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        vs.time_base = time_base
        vs.codec_context.time_base = time_base
        if options:
            vs.options = options
        if tags is not None:
            cc = vs.codec_context
            cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = tags
        a_s = out.add_stream("aac", rate=48000, layout="stereo") if audio_seconds > 0 else None
        itemsize = 1 if "p10" not in pix_fmt and "16" not in pix_fmt and "p12" not in pix_fmt else 2
        dtype = np.uint8 if itemsize == 1 else np.uint16
        for i, planes in enumerate(frames):
            f = av.VideoFrame(w, h, pix_fmt)
            for plane, src in zip(f.planes, planes):
                dst = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // itemsize)
                dst[:, : src.shape[1]] = src
            f.pts = pts[i] if pts is not None else i
            f.time_base = time_base
            if tags is not None:
                f.color_primaries, f.color_trc, f.colorspace, f.color_range = tags
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        if a_s is not None:
            _mux_tone(out, a_s, audio_seconds)
    finally:
        out.close()
    return path


def flat_planes(w: int, h: int, ycc: tuple[int, int, int], bits: int = 8, sub: tuple[int, int] = (2, 2)):
    dtype = np.uint8 if bits == 8 else np.uint16
    y = np.full((h, w), ycc[0], dtype)
    c = ((h + sub[1] - 1) // sub[1], (w + sub[0] - 1) // sub[0])
    return y, np.full(c, ycc[1], dtype), np.full(c, ycc[2], dtype)


def bars_planes(w: int, h: int, colours: list[tuple[int, int, int]]):
    """Vertical bars of flat 8-bit 4:2:0 colours, each bar a multiple of 4 pixels wide."""
    y = np.zeros((h, w), np.uint8)
    cb = np.zeros((h // 2, w // 2), np.uint8)
    cr = np.zeros((h // 2, w // 2), np.uint8)
    bw = w // len(colours)
    for i, (yy, bb, rr) in enumerate(colours):
        y[:, i * bw : (i + 1) * bw] = yy
        cb[:, i * bw // 2 : (i + 1) * bw // 2] = bb
        cr[:, i * bw // 2 : (i + 1) * bw // 2] = rr
    return y, cb, cr


def decode_planes(path: str | Path, limit: int | None = None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Decoded Y', Cb, Cr planes as uint16 arrays, read without any swscale conversion."""
    out = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            itemsize = 2 if frame.format.name.endswith(("10le", "12le", "16le")) else 1
            dtype = np.uint16 if itemsize == 2 else np.uint8
            planes = []
            for p in frame.planes[:3]:
                arr = np.frombuffer(p, dtype).reshape(p.height, p.line_size // itemsize)[:, : p.width]
                planes.append(arr.astype(np.uint16))
            out.append(tuple(planes))
            if limit and len(out) >= limit:
                break
    return out


def video_pts(path: str | Path) -> list[float]:
    """Presentation times (seconds) of all decoded video frames, in output order."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [float(f.pts * s.time_base) for f in c.decode(s)]


def audio_packets(path: str | Path) -> list[bytes]:
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


@pytest.fixture
def sample_clip(tmp_path: Path) -> Path:
    """A 1-second 64×36 sample clip (scene with highlights) with AAC audio."""
    from hdrvideo.media.sample import write_clip

    path = tmp_path / "sample.mp4"
    write_clip(str(path), width=64, height=36, seconds=1.0, fps=24)
    return path


def write_h264_clip(
    path: str | Path,
    frames: int,
    *,
    size: tuple[int, int] = (64, 48),
    rate: int = 25,
    gop: int = 10,
    interlaced: str | None = None,  # "tff" | "bff": field-coded (x264 ildct/ilme) with that field order
    audio_seconds: float = 0.0,
    stream_metadata: dict[str, str] | None = None,
    rotation: int = 0,
    options: dict[str, str] | None = None,
    sample_aspect: Fraction | None = None,  # pixel aspect (libx264 writes it into the VUI)
    field_shift: int = 2,  # px the bottom field's bar sits right of the top field's (0: progressive content)
) -> Path:
    """An H.264 clip of a bar moving 4 px a frame (2 px between fields), keyframes every ``gop``.

    Interlaced clips get each frame's field flags from FFmpeg's ``setfield`` filter (PyAV
    cannot set them), which libx264 reads; the stream's field order is set to match.
    """
    path = Path(path)
    w, h = size
    out = av.open(str(path), "w", options=options or {})
    try:
        vs = out.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": "0"}
        graph = None
        if interlaced:
            cc = vs.codec_context
            cc.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
            cc.field_order = 2 if interlaced == "tff" else 3  # AV_FIELD_TT / AV_FIELD_BB
            graph = av.filter.Graph()
            src = graph.add_buffer(width=w, height=h, format="yuv420p", time_base=Fraction(1, rate))
            setfield = graph.add("setfield", interlaced)
            sink = graph.add("buffersink")
            src.link_to(setfield)
            setfield.link_to(sink)
            graph.configure()
        for key, value in (stream_metadata or {}).items():
            vs.metadata[key] = value
        if rotation:
            vs.set_display_rotation(rotation)
        if sample_aspect:
            vs.codec_context.sample_aspect_ratio = sample_aspect
        a_s = out.add_stream("aac", rate=48000, layout="stereo") if audio_seconds > 0 else None
        rng = np.random.default_rng(1)
        for i in range(frames):
            img = rng.integers(40, 60, (h, w, 3), dtype=np.uint8)
            x = (i * 4) % (w - 10)
            img[0::2, x : x + 6] = 220  # top field
            img[1::2, x + field_shift : x + field_shift + 6] = 220  # bottom field, later in time
            f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            f.pts, f.time_base = i, Fraction(1, rate)
            if graph is not None:
                graph.vpush(f)
                f = graph.vpull()
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        if a_s is not None:
            _mux_tone(out, a_s, audio_seconds)
    finally:
        out.close()
    return path


def write_telecined_clip(path: str | Path, film_frames: int, *, size: tuple[int, int] = (96, 64)) -> Path:
    """Film at 23.976 frames/s telecined to 29.97i (FFmpeg's ``telecine``, 3:2 pulldown, top
    field first) and coded as interlaced H.264: 5 video frames for every 4 film frames.

    Film frame i has a bright bar at x = 4i (6 px wide) on a dark ground, so every output frame
    tells which film frame it shows.
    """
    path = Path(path)
    w, h = size
    graph = av.filter.Graph()
    src = graph.add("buffer", f"video_size={w}x{h}:pix_fmt=yuv420p:time_base=1001/24000:pixel_aspect=1/1:"
                              "frame_rate=24000/1001")
    telecine, sink = graph.add("telecine", "first_field=top:pattern=23"), graph.add("buffersink")
    src.link_to(telecine)
    telecine.link_to(sink)
    graph.configure()
    out = av.open(str(path), "w")
    try:
        vs = out.add_stream("libx264", rate=Fraction(30000, 1001))
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
        vs.codec_context.field_order = 2  # AV_FIELD_TT
        vs.options = {"x264-params": "tff=1", "crf": "8", "bf": "0"}

        def encode(frame):
            for p in vs.encode(frame):
                out.mux(p)

        def drain():
            while True:
                try:
                    f = graph.vpull()
                except (av.error.BlockingIOError, av.error.EOFError):
                    return
                f.pts = None
                encode(f)

        for i in range(film_frames):
            luma = np.full((h, w), 40, np.uint8)
            luma[:, (4 * i) % (w - 6):(4 * i) % (w - 6) + 6] = 220
            planes = np.concatenate([luma, np.full((h // 2, w), 128, np.uint8)])
            f = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            f.pts, f.time_base = i, Fraction(1001, 24000)
            graph.vpush(f)
            drain()
        graph.vpush(None)
        drain()
        encode(None)
    finally:
        out.close()
    return path


def write_soft_pulldown_clip(path: str | Path, film_frames: int, *, size: tuple[int, int] = (96, 64),
                             timecode: str | None = None) -> Path:
    """Film at 23.976 frames/s as MPEG-2 with soft 3:2 pulldown, in Matroska (as DVD rips are).

    PyAV's MPEG-2 encoder writes no repeat_first_field flags, so the elementary stream is
    patched the way a DVD authoring encoder writes it: the sequence header says 29.97 frames/s
    (frame_rate_code 4), and each picture coding extension (ISO/IEC 13818-2 §6.2.3.1) gets
    progressive_frame = 1 and the top_field_first / repeat_first_field cadence
    (1,1) (0,0) (1,0) (0,1): 3, 2, 3, 2 fields. FFmpeg's demuxer then times the frames 3 and 2
    field periods apart. Film frame i has a bright bar at x = 4i, as in :func:`write_telecined_clip`.
    ``timecode`` is written as the stream's start timecode (a 29.97 one, as DVDs count).
    """
    path = Path(path)
    w, h = size
    es = path.with_suffix(".m2v")
    with av.open(str(es), "w", format="mpeg2video") as out:
        vs = out.add_stream("mpeg2video", rate=Fraction(24000, 1001))
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
        vs.options = {"bf": "0", "qscale": "2"}
        vs.codec_context.qmin = 1
        for i in range(film_frames):
            luma = np.full((h, w), 40, np.uint8)
            luma[:, (4 * i) % (w - 6):(4 * i) % (w - 6) + 6] = 220
            planes = np.concatenate([luma, np.full((h // 2, w), 128, np.uint8)])
            f = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            f.pts = i
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    data = bytearray(es.read_bytes())
    pattern = [(1, 1), (0, 0), (1, 0), (0, 1)]
    i = n = 0
    while (i := data.find(b"\x00\x00\x01", i)) >= 0:
        if data[i + 3] == 0xB3:  # sequence header: frame_rate_code is the low nibble of byte 7
            data[i + 7] = (data[i + 7] & 0xF0) | 4
        elif data[i + 3] == 0xB5 and data[i + 4] >> 4 == 8:  # picture coding extension (40 bits read)
            bits = int.from_bytes(data[i + 4:i + 9], "big")
            tff, rff = pattern[n % 4]
            # bit positions after the start code: top_field_first, repeat_first_field,
            # chroma_420_type, progressive_frame
            for pos, v in ((24, tff), (30, rff), (31, 1), (32, 1)):
                bits = bits | (1 << (39 - pos)) if v else bits & ~(1 << (39 - pos))
            data[i + 4:i + 9] = bits.to_bytes(5, "big")
            n += 1
        i += 4
    es.write_bytes(bytes(data))
    with av.open(str(es), options={"fflags": "+genpts"}) as inp, av.open(str(path), "w", format="matroska") as out:
        s = inp.streams.video[0]
        o = out.add_stream_from_template(s)
        if timecode:
            o.metadata["timecode"] = timecode
        for p in inp.demux(s):
            if p.dts is None:
                continue
            p.stream = o
            out.mux(p)
    es.unlink()
    return path


def remux_damaging(src: str | Path, dst: str | Path, video_packet: int, keep: int = 4) -> Path:
    """Stream-copy ``src`` to ``dst``, overwriting the payload of one video packet after ``keep`` bytes."""
    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        k = 0
        for p in i.demux():
            if p.dts is None:
                continue
            if p.stream.type == "video":
                if k == video_packet:
                    data = bytearray(bytes(p))
                    data[keep:] = bytes((b * 7 + 13) & 0xFF for b in data[keep:])
                    memoryview(p)[:] = bytes(data)
                k += 1
            p.stream = streams[p.stream.index]
            o.mux(p)
    return Path(dst)
