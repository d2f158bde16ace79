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
