"""HEVC SEI: the HDR10 static metadata inside the bitstream, set to the final values at mux.

A player that reads the HDR10 metadata from the bitstream rather than the container (many TV
and set-top decoders do) looks for two prefix SEI messages in the IRAP access units: the
mastering display colour volume (payloadType 137, H.265 D.2.28 / D.3.28; the same fields as
the ``mdcv`` box and SMPTE ST 2086) and the content light level (payloadType 144, H.265
D.2.35 / D.3.35; CTA-861.3 MaxCLL and MaxFALL, as in the ``clli`` box).

libx265 writes both, but its content light level must be given before the first frame, so
it says 0, 0 ("unknown"); hevc_nvenc writes neither. :func:`with_hdr10_sei` rewrites an
access unit (in the length-prefixed form of MP4 and Matroska) so that every keyframe carries
both messages with the measured values, changing existing ones in place and inserting a
prefix SEI NAL unit after the parameter sets where one is missing; :func:`hvcc_with_hdr10_sei`
does the same to the SEI arrays of an ``hvcC`` record. Everything else is kept byte for byte.
"""

from __future__ import annotations

import av

__all__ = ["MASTERING_DISPLAY", "CONTENT_LIGHT_LEVEL", "escape_rbsp", "unescape_rbsp", "sei_messages",
           "sei_nal", "split_nals", "join_nals", "with_hdr10_sei", "hvcc_with_hdr10_sei", "nal_length_size", "packet_with_data"]

PREFIX_SEI = 39  # H.265 Table 7-1
MASTERING_DISPLAY = 137  # mastering_display_colour_volume (D.2.28)
CONTENT_LIGHT_LEVEL = 144  # content_light_level_info (D.2.35)
_PARAMETER_SETS = (32, 33, 34, 35)  # VPS, SPS, PPS, AUD: before any prefix SEI of the access unit


def escape_rbsp(rbsp: bytes) -> bytes:
    """Insert emulation_prevention_three_byte after every 0x0000 followed by 0x00–0x03 (H.265 §7.4.2)."""
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def unescape_rbsp(ebsp: bytes) -> bytes:
    """Remove the emulation_prevention_three_bytes (0x000003 → 0x0000)."""
    out = bytearray()
    zeros = 0
    for b in ebsp:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def _sei_value(value: int) -> bytes:
    """payloadType / payloadSize coding (H.265 §7.3.5): 0xFF bytes, then the remainder."""
    return b"\xff" * (value // 255) + bytes([value % 255])


def sei_messages(nal: bytes) -> list[tuple[int, bytes]] | None:
    """The (payloadType, payload) messages of one SEI NAL unit (2-byte header included), or
    None when it does not parse (it is then left alone)."""
    rbsp = unescape_rbsp(nal[2:])
    out, off = [], 0
    while off < len(rbsp) and not (rbsp[off] == 0x80 and off == len(rbsp) - 1):
        values = []
        for _ in range(2):
            v = 0
            while off < len(rbsp) and rbsp[off] == 0xFF:
                v += 255
                off += 1
            if off >= len(rbsp):
                return None
            values.append(v + rbsp[off])
            off += 1
        ptype, size = values
        if off + size > len(rbsp):
            return None
        out.append((ptype, rbsp[off:off + size]))
        off += size
    return out


def sei_nal(messages: list[tuple[int, bytes]], header: bytes = bytes([PREFIX_SEI << 1, 0x01])) -> bytes:
    """One SEI NAL unit (no start code or length) holding ``messages``."""
    rbsp = bytearray()
    for ptype, payload in messages:
        rbsp += _sei_value(ptype) + _sei_value(len(payload)) + payload
    rbsp.append(0x80)  # rbsp_trailing_bits
    return header + escape_rbsp(bytes(rbsp))


def _replaced(nal: bytes, values: dict[int, bytes], found: set[int]) -> bytes:
    """``nal`` with the payloads of the message types in ``values`` replaced (noted in ``found``)."""
    if (nal[0] >> 1) & 0x3F != PREFIX_SEI:
        return nal
    messages = sei_messages(nal)
    if messages is None or not any(t in values for t, _ in messages):
        return nal
    found.update(t for t, _ in messages if t in values)
    return sei_nal([(t, values.get(t, p)) for t, p in messages], nal[:2])


def split_nals(sample: bytes, length_size: int = 4) -> list[bytes] | None:
    """The NAL units of a length-prefixed access unit (MP4/Matroska), or None when the lengths
    do not add up to the sample."""
    nals, off = [], 0
    while off + length_size <= len(sample):
        n = int.from_bytes(sample[off:off + length_size], "big")
        if n == 0 or off + length_size + n > len(sample):
            return None
        nals.append(sample[off + length_size:off + length_size + n])
        off += length_size + n
    return nals if off == len(sample) else None


def join_nals(nals: list[bytes], length_size: int = 4) -> bytes:
    """The length-prefixed access unit of ``nals``."""
    return b"".join(len(nal).to_bytes(length_size, "big") + nal for nal in nals)


def with_hdr10_sei(sample: bytes, mastering_display: bytes, content_light: bytes, keyframe: bool,
                   length_size: int = 4) -> bytes:
    """An access unit of length-prefixed NAL units with its HDR10 SEI set: existing mastering
    display / content light level messages get these payloads; a keyframe missing either gets
    a prefix SEI NAL unit with it, after the parameter sets and before the first slice."""
    values = {MASTERING_DISPLAY: mastering_display, CONTENT_LIGHT_LEVEL: content_light}
    nals = split_nals(sample, length_size)
    if nals is None:
        return sample  # not what it should be: left alone
    found: set[int] = set()
    out = [_replaced(nal, values, found) for nal in nals]
    missing = [(t, values[t]) for t in (MASTERING_DISPLAY, CONTENT_LIGHT_LEVEL) if t not in found]
    if keyframe and missing:
        at = 0
        while at < len(out) and (out[at][0] >> 1) & 0x3F in _PARAMETER_SETS:
            at += 1
        out.insert(at, sei_nal(missing))
    if out == nals:
        return sample
    return join_nals(out, length_size)


def nal_length_size(hvcc: bytes) -> int | None:
    """lengthSizeMinusOne + 1 of an ``hvcC`` record (ISO/IEC 14496-15 §8.3.3.1), or None
    when ``hvcc`` is not one (Annex B extradata)."""
    if len(hvcc) < 23 or hvcc[0] != 1:
        return None
    return (hvcc[21] & 3) + 1


def hvcc_with_hdr10_sei(hvcc: bytes, mastering_display: bytes, content_light: bytes) -> bytes:
    """An ``hvcC`` record whose SEI NAL units carry these payloads where they hold those
    messages (libx265 puts its header SEI there too); the rest unchanged."""
    if nal_length_size(hvcc) is None:
        return hvcc
    values = {MASTERING_DISPLAY: mastering_display, CONTENT_LIGHT_LEVEL: content_light}
    out = bytearray(hvcc[:23])
    off = 23
    try:
        for _ in range(hvcc[22]):
            kind, count = hvcc[off], int.from_bytes(hvcc[off + 1:off + 3], "big")
            out += hvcc[off:off + 3]
            off += 3
            for _ in range(count):
                n = int.from_bytes(hvcc[off:off + 2], "big")
                nal = hvcc[off + 2:off + 2 + n]
                if len(nal) != n:
                    return hvcc
                nal = _replaced(nal, values, set())
                out += len(nal).to_bytes(2, "big") + nal
                off += 2 + n
    except IndexError:
        return hvcc
    return bytes(out + hvcc[off:])


def packet_with_data(packet: av.Packet, data: bytes) -> av.Packet:
    """A copy of ``packet`` holding ``data``, its timing, flags and stream kept (the copy's
    buffer is FFmpeg's, see ``LightMeter.packet``)."""
    out = av.Packet(len(data))
    memoryview(out)[:] = data
    out.pts, out.dts, out.time_base = packet.pts, packet.dts, packet.time_base
    out.duration = packet.duration
    out.is_keyframe = packet.is_keyframe
    out.stream = packet.stream
    return out
