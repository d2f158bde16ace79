"""Closed captions carried through: ATSC A/53 ``cc_data`` into HEVC SEI.

A broadcast or DVD-sourced picture stream carries CEA-608/708 captions as ATSC A/53 Part 4
``cc_data`` inside the video bitstream (ITU-T T.35 user data in an H.264/HEVC SEI, or MPEG-2
picture user data). FFmpeg's decoders hand it out per frame as ``A53_CC`` side data: the
``cc_data_pkt`` triplets (3 bytes each), in presentation order. Re-encoding the picture drops
it, and PyAV cannot attach side data to the frames it encodes, so it is written here into each
encoded access unit instead: a prefix SEI NAL unit (H.265 §7.3.5, nal_unit_type 39) holding a
``user_data_registered_itu_t_t35`` message (payloadType 4, H.265 D.2.6) with the A/53 header
(country code 0xB5, provider 0x0031, user identifier "GA94", user_data_type_code 3), the SEI
libx265 and NVENC write for FFmpeg's ``a53cc`` option, byte for byte as FFmpeg's
``ff_alloc_a53_sei`` lays it out.
"""

from __future__ import annotations

from collections import deque
from fractions import Fraction

import av

from .hevc_sei import join_nals, packet_with_data, sei_nal, split_nals

__all__ = ["a53_sei_nal", "insert_prefix_sei", "with_sei", "CaptionRetimer"]

_T35_A53 = bytes([0xB5, 0x00, 0x31]) + b"GA94" + bytes([0x03])  # ATSC A/53 Part 4 Table 6.4
_USER_DATA_T35 = 4
_MAX_CC_COUNT = 31  # cc_count is 5 bits


def a53_sei_nal(cc_data: bytes) -> bytes:
    """An Annex B prefix SEI NAL unit carrying ``cc_data`` (a multiple of 3 bytes).

    More than 31 triplets (the 5-bit cc_count) are split over several SEI messages of the NAL.
    """
    if not cc_data or len(cc_data) % 3:
        raise ValueError(f"cc_data must be whole 3-byte triplets, got {len(cc_data)} bytes")
    messages = []
    for i in range(0, len(cc_data), 3 * _MAX_CC_COUNT):
        part = cc_data[i:i + 3 * _MAX_CC_COUNT]
        # process_cc_data_flag = 1, cc_count; em_data; the triplets; marker_bits 0xFF
        messages.append((_USER_DATA_T35, _T35_A53 + bytes([0x40 | (len(part) // 3), 0x00]) + part + b"\xff"))
    return b"\x00\x00\x00\x01" + sei_nal(messages)


def _nal_starts(data: bytes) -> list[tuple[int, int]]:
    """(start code offset, NAL header offset) of each NAL unit of an Annex B access unit."""
    out = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        start = i - 1 if i > 0 and data[i - 1] == 0 else i
        out.append((start, i + 3))
        i = data.find(b"\x00\x00\x01", i + 3)
    return out


def insert_prefix_sei(access_unit: bytes, sei: bytes) -> bytes:
    """``access_unit`` (Annex B, or 4-byte length-prefixed as in MP4) with the Annex B NAL
    ``sei`` placed before its first VCL NAL unit (types 0–31), where H.265 §7.4.2.4.4 puts
    prefix SEI: after any access unit delimiter and parameter sets."""
    if access_unit.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
        for start, header in _nal_starts(access_unit):
            if header < len(access_unit) and (access_unit[header] >> 1) & 0x3F < 32:
                return access_unit[:start] + sei + access_unit[start:]
        return access_unit + sei
    nals = split_nals(access_unit)  # length-prefixed: the same NAL with a 4-byte size instead of the start code
    if nals is None:
        return access_unit + join_nals([sei[4:]])
    at = next((i for i, nal in enumerate(nals) if (nal[0] >> 1) & 0x3F < 32), len(nals))
    return join_nals(nals[:at] + [sei[4:]] + nals[at:])


def with_sei(packet: av.Packet, sei: bytes) -> av.Packet:
    """A copy of an encoded ``packet`` with ``sei`` inserted (:func:`insert_prefix_sei`), its
    timing, flags and stream kept. The copy's buffer is FFmpeg's (see ``LightMeter.packet``)."""
    return packet_with_data(packet, insert_prefix_sei(bytes(packet), sei))


class CaptionRetimer:
    """The ``cc_data`` of source frames handed to the frames of a retimed stream (3:2 inverse
    telecine: 29.97 → 23.976 frames/s, one frame in five dropped, the rest retimed).

    Caption decoders read ``cc_data`` as a byte stream (CEA-608 byte pairs, CEA-708 DTVCC
    packets), so what must hold is order and rate, not which picture carries a byte: every
    valid triplet goes out once, in order, on the output frame whose display interval holds
    its source frame's time, at most 31 a frame (the 5-bit ``cc_count``; the rest go on the
    frames after). Padding triplets (``cc_valid`` = 0) carry nothing and are left out. Source
    frames before the first output frame taken (a ``--start`` cut) are dropped with it.
    """

    def __init__(self, frame_duration: Fraction) -> None:
        self.frame_duration = Fraction(frame_duration)  # of the output frames, in seconds
        self._pending: deque[tuple[Fraction, bytes]] = deque()
        self._carry = b""
        self._started = False

    def add(self, time: Fraction, cc_data: bytes) -> None:
        """A source frame's ``cc_data`` at its presentation time (seconds)."""
        valid = b"".join(cc_data[i:i + 3] for i in range(0, len(cc_data) - 2, 3) if cc_data[i] & 0x04)
        if valid:
            self._pending.append((Fraction(time), valid))

    def take(self, time: Fraction) -> bytes | None:
        """The ``cc_data`` for the output frame at ``time`` (seconds), or None."""
        t = Fraction(time)
        if not self._started:
            self._started = True
            # output timestamps are whole output frames: allow one of rounding before the first
            while self._pending and self._pending[0][0] < t - self.frame_duration:
                self._pending.popleft()
        data = self._carry
        while self._pending and self._pending[0][0] < t + self.frame_duration:
            data += self._pending.popleft()[1]
        cap = 3 * _MAX_CC_COUNT
        out, self._carry = data[:cap], data[cap:]
        return out or None
