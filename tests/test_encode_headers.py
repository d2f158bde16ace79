"""Encoder parameter sets and options: what NVENC needs, checked with libx265 on the CPU.

NVENC under MP4's global-header flag writes VPS/SPS/PPS only into the extradata (FFmpeg
nvenc.c: ``disableSPSPPS``), never in-band. libx265 does the same with ``repeat-headers=0``
(without ``hdr10``, which forces repeated headers), so these tests simulate NVENC with it.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

import hdrvideo
from hdrvideo.errors import EncoderError
from hdrvideo.media import encode
from hdrvideo.media.encode import EncoderConfig, HevcEncoder, check_encoder, encoder_options
from hdrvideo.pipeline import LightMeter

from conftest import flat_planes, write_planes_clip

HEVC_PARAMETER_SETS = {32, 33, 34}  # VPS, SPS, PPS (H.265 table 7-1)


def _nal_types(packet_bytes: bytes) -> set[int]:
    """NAL unit types of an MP4 (4-byte length-prefixed) HEVC sample."""
    out, i = set(), 0
    while i + 5 <= len(packet_bytes):
        n = int.from_bytes(packet_bytes[i : i + 4], "big")
        out.add((packet_bytes[i + 4] >> 1) & 0x3F)
        i += 4 + n
    return out


@pytest.fixture
def headers_out_of_band(monkeypatch):
    """libx265 that, like NVENC, writes parameter sets only into the extradata."""
    monkeypatch.setattr(encode, "x265_params", lambda cfg: "repeat-headers=0:log-level=error")


def _encode(path, frames: int, sink) -> HevcEncoder:
    cfg = EncoderConfig(width=64, height=64, time_base=Fraction(1, 24), rate=Fraction(24), x265_preset="ultrafast")
    enc = HevcEncoder(str(path), cfg, packet_sink=sink)
    return enc


def test_parameter_sets_exist_before_the_first_frame_and_the_meter_decodes_every_frame(tmp_path, headers_out_of_band):
    packets = []
    enc = _encode(tmp_path / "v.mp4", 5, lambda p: packets.append(LightMeter.packet(p, p.pts, p.dts)))
    extradata = enc.extradata  # before any frame: the codec is open
    assert extradata and len(extradata) > 20
    y = np.full((64, 64), 600, np.uint16)
    c = np.full((32, 32), 512, np.uint16)
    for i in range(5):
        enc.encode(y, c, c, i)
    enc.close()
    assert len(packets) == 5
    # the simulation is faithful: no parameter set travels in-band
    assert all(not (_nal_types(bytes(p)) & HEVC_PARAMETER_SETS) for p in packets)

    def meter_frames(extra):
        meter = LightMeter(torch.device("cpu"))
        if extra:
            meter.decoder.extradata = extra
        for p in packets:
            try:
                meter.feed(LightMeter.packet(p, p.pts, p.dts))
            except av.error.FFmpegError:
                pass
        meter.feed(None)
        return meter

    assert meter_frames(None).frames == 0  # what the pipeline got before: extradata was None
    meter = meter_frames(extradata)
    assert meter.frames == 5 and meter.max_cll > 0


def test_conversion_succeeds_when_headers_are_only_in_the_extradata(tmp_path, headers_out_of_band):
    clip = write_planes_clip(tmp_path / "in.mkv", [flat_planes(64, 36, (200, 128, 128))] * 4)
    report = hdrvideo.convert(clip, tmp_path / "out.mp4", preset="bt2408", x265_preset="ultrafast")
    assert report.frames == 4 and report.max_cll > 0
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 4


def test_check_encoder_opens_nvenc_with_the_encoders_own_options(monkeypatch):
    """One options dict: what check_encoder opens is what HevcEncoder will open."""
    opened = {}

    class FakeContext:
        def __init__(self, name):
            self.name = name
            self.options = {}

        def open(self):
            opened.update(name=self.name, options=dict(self.options), size=(self.width, self.height),
                          pix_fmt=self.pix_fmt)

    monkeypatch.setattr(encode, "encoder_available", lambda name: True)
    monkeypatch.setattr(av.CodecContext, "create", staticmethod(lambda name, mode: FakeContext(name)))
    check_encoder("hevc_nvenc", 3840, 2160, crf=21.0)
    real = encoder_options(EncoderConfig(width=3840, height=2160, time_base=Fraction(1, 24), rate=None,
                                         encoder="hevc_nvenc", crf=21.0))
    assert opened["options"] == real
    assert {"bf", "b_ref_mode", "profile", "cq"} <= set(real) and real["cq"] == "21"
    assert opened["size"] == (3840, 2160) and opened["pix_fmt"] == "p010le"


def test_check_encoder_without_nvenc_hardware_is_one_line_encoder_error():
    if not encode.encoder_available("hevc_nvenc"):
        pytest.skip("this FFmpeg has no hevc_nvenc")
    try:
        check_encoder("hevc_nvenc", 256, 256)
    except EncoderError as err:
        assert "\n" not in str(err) and "hevc_nvenc" in str(err)
    else:  # an NVIDIA GPU with NVENC is present: the real encoder must then open too
        enc = HevcEncoder("/dev/null", EncoderConfig(width=256, height=256, time_base=Fraction(1, 25), rate=None,
                                                     encoder="hevc_nvenc"))
        assert enc.extradata
        enc.abort()


# ---------------------------------------------------------------- HDR10 SEI in the bitstream


def bitstream_hdr10(path) -> list[tuple[tuple[int, int] | None, float | None]]:
    """Per decoded frame, the (MaxCLL, MaxFALL) and mastering peak (cd/m²) that the HEVC
    bitstream itself says: the stream is taken out of its container (Annex B) and decoded
    raw, so no container box or element can supply them."""
    import struct

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        bsf = av.BitStreamFilterContext("hevc_mp4toannexb", s)
        raw = b"".join(bytes(q) for p in c.demux(s) for q in bsf.filter(p))
    (path.parent / "raw.hevc").write_bytes(raw)
    out = []
    T = av.sidedata.sidedata.Type
    with av.open(str(path.parent / "raw.hevc"), format="hevc") as r:
        for frame in r.decode(video=0):
            cll = frame.side_data.get(T.CONTENT_LIGHT_LEVEL)
            md = frame.side_data.get(T.MASTERING_DISPLAY_METADATA)
            # AVMasteringDisplayMetadata: 8 rationals (primaries, white), min, max luminance, 2 flags
            peak = None
            if md is not None:
                num, den = struct.unpack_from("<2i", bytes(md), 8 * 8 + 8)
                peak = num / den
            out.append((struct.unpack("<2I", bytes(cll)) if cll is not None else None, peak))
    return out


def keyframe_sei_types(path) -> list[set[int]]:
    """For each keyframe sample, the payloadType of the first SEI message of each prefix SEI NAL."""
    out = []
    with av.open(str(path)) as c:
        for p in c.demux(video=0):
            if not p.size or not p.is_keyframe:
                continue
            b, i, types = bytes(p), 0, set()
            while i + 5 <= len(b):
                n = int.from_bytes(b[i:i + 4], "big")
                if (b[i + 4] >> 1) & 0x3F == 39:
                    types.add(b[i + 6])
                i += 4 + n
            out.append(types)
    return out


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_bitstream_sei_carries_the_measured_light_levels(tmp_path, ext):
    frames = [flat_planes(64, 36, (60 + 6 * i, 128, 128)) for i in range(24)]
    clip = write_planes_clip(tmp_path / "in.mkv", frames)
    out = tmp_path / f"out{ext}"
    report = hdrvideo.convert(clip, out, preset="bt2408", x265_preset="ultrafast", keyint=8)
    assert 0 < report.max_fall <= report.max_cll  # a real measurement, not the encoder's 0, 0
    seen = bitstream_hdr10(out)
    assert len(seen) == 24 and all(s == ((report.max_cll, report.max_fall), 1000.0) for s in seen)
    keys = keyframe_sei_types(out)
    assert len(keys) == 3 and all({137, 144} <= k for k in keys)  # on every keyframe: a player may start there
    from hdrvideo.media.hevc_sei import sei_messages

    with av.open(str(out)) as c:  # the hvcC record (MP4 sample entry, Matroska CodecPrivate) too
        hvcc = c.streams.video[0].codec_context.extradata
    off, cll = 23, []
    for _ in range(hvcc[22]):
        kind, count = hvcc[off] & 0x3F, int.from_bytes(hvcc[off + 1:off + 3], "big")
        off += 3
        for _ in range(count):
            n = int.from_bytes(hvcc[off:off + 2], "big")
            if kind == 39:
                cll += [p for t, p in sei_messages(hvcc[off + 2:off + 2 + n]) if t == 144]
            off += 2 + n
    assert cll == [report.max_cll.to_bytes(2, "big") + report.max_fall.to_bytes(2, "big")]


def test_bitstream_sei_is_added_when_the_encoder_writes_none(tmp_path, headers_out_of_band):
    """hevc_nvenc writes no HDR10 SEI (x265 without hdr10 simulates it): the mux adds both."""
    clip = write_planes_clip(tmp_path / "in.mkv", [flat_planes(64, 36, (200, 128, 128))] * 4)
    out = tmp_path / "out.mp4"
    report = hdrvideo.convert(clip, out, preset="bt2408", x265_preset="ultrafast")
    assert bitstream_hdr10(out)[0] == ((report.max_cll, report.max_fall), 1000.0)


def test_sei_rewriting_units():
    from hdrvideo.media.hevc_sei import (escape_rbsp, hvcc_with_hdr10_sei, sei_messages, sei_nal, unescape_rbsp,
                                         with_hdr10_sei)

    for rbsp in (b"\x00\x00\x00\x00\x01", b"\x00\x00\x03\x00\x00\x02x", bytes(range(8)) * 3, b""):
        assert unescape_rbsp(escape_rbsp(rbsp)) == rbsp
        assert b"\x00\x00\x00" not in escape_rbsp(rbsp) and b"\x00\x00\x01" not in escape_rbsp(rbsp)
    # MaxCLL 0, MaxFALL 1: 00 00 00 01 needs an emulation prevention byte, and parses back
    cll = (0).to_bytes(2, "big") + (1).to_bytes(2, "big")
    nal = sei_nal([(144, cll), (5, b"u" * 300)])
    assert b"\x00\x00\x03" in nal and sei_messages(nal) == [(144, cll), (5, b"u" * 300)]

    def au(*nals: bytes) -> bytes:
        return b"".join(len(n).to_bytes(4, "big") + n for n in nals)

    vps, sps, pps = bytes([32 << 1, 1, 0xAA]), bytes([33 << 1, 1, 0xBB]), bytes([34 << 1, 1, 0xCC])
    idr, trail = bytes([19 << 1, 1, 0xDD, 0xEE]), bytes([1 << 1, 1, 0x11])
    mdcv, new_cll = bytes(range(24)), bytes([0x03, 0xE8, 0x00, 0x64])
    old = au(vps, sps, pps, sei_nal([(144, b"\0\0\0\0")]), sei_nal([(5, b"x265 info")]), idr)
    got = with_hdr10_sei(old, mdcv, new_cll, keyframe=True)
    assert got == au(vps, sps, pps, sei_nal([(137, mdcv)]), sei_nal([(144, new_cll)]), sei_nal([(5, b"x265 info")]), idr)
    bare = au(vps, sps, pps, idr)  # NVENC: no SEI; inserted after the parameter sets
    assert with_hdr10_sei(bare, mdcv, new_cll, keyframe=True) == au(vps, sps, pps, sei_nal([(137, mdcv), (144, new_cll)]), idr)
    plain = au(trail)
    assert with_hdr10_sei(plain, mdcv, new_cll, keyframe=False) is plain  # other frames untouched
    assert with_hdr10_sei(b"\x00\x00\x00\x09abc", mdcv, new_cll, keyframe=True) == b"\x00\x00\x00\x09abc"  # damaged: left
    sei = sei_nal([(144, b"\0\0\0\0")])
    hvcc = bytes([1]) + bytes(20) + bytes([0xFF, 2]) + bytes([33, 0, 1, 0, 3]) + sps + bytes([39, 0, 1]) \
        + len(sei).to_bytes(2, "big") + sei
    fixed = hvcc_with_hdr10_sei(hvcc, mdcv, new_cll)
    new_sei = sei_nal([(144, new_cll)])
    assert fixed == hvcc[:-len(sei) - 2] + len(new_sei).to_bytes(2, "big") + new_sei  # the SPS array unchanged
