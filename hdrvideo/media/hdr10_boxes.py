"""HDR10 static metadata in containers: the ISO-BMFF ``mdcv``/``clli`` boxes and Matroska's
Colour/MasteringMetadata elements.

FFmpeg's muxers write both from stream side data, but PyAV cannot attach that side data to an
output stream. So the encoder writes a video-only MP4 (``moov`` at the end), and
:func:`add_mp4_hdr10_boxes` appends the two boxes to its HEVC sample entry; FFmpeg's mov
demuxer then exports them as stream side data, which a stream-copy remux carries into the final
MP4 (``mdcv``, ``clli``) or MKV (MasteringMetadata, MaxCLL, MaxFALL).

Box layouts: ISO/IEC 14496-12 / 23001-8 and the Apple/ISO ``mdcv``, ``clli`` definitions
(the same fields as the HEVC SEI of ITU-T H.265 D.2.28/D.2.35): display primaries in the order
G, B, R in units of 0.00002, white point likewise, luminances in 0.0001 cd/m²;
MaxCLL/MaxFALL as 16-bit cd/m² (CTA-861.3).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from ..standards import PRIMARIES

__all__ = ["MasteringMetadata", "add_mp4_hdr10_boxes", "read_mp4_hdr10", "read_mkv_hdr10"]

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}
_SAMPLE_ENTRY_HEADER = 8 + 78  # box header + VisualSampleEntry fields before child boxes
_HEVC_ENTRIES = {b"hvc1", b"hev1"}


@dataclass(frozen=True)
class MasteringMetadata:
    """SMPTE ST 2086 mastering display + CTA-861.3 content light level, in natural units."""

    primaries: str = "p3-d65"
    max_luminance: float = 1000.0
    min_luminance: float = 0.0001
    max_cll: int = 0
    max_fall: int = 0

    def x265_master_display(self) -> str:
        """``master-display`` string of x265 (G, B, R, WP in 0.00002 units; L in 0.0001 cd/m²)."""
        g, b, r, wp, lmax, lmin = self._codes()
        return f"G({g[0]},{g[1]})B({b[0]},{b[1]})R({r[0]},{r[1]})WP({wp[0]},{wp[1]})L({lmax},{lmin})"

    def _codes(self):
        p = PRIMARIES[self.primaries]

        def xy(c: tuple[float, float]) -> tuple[int, int]:
            return round(c[0] * 50000), round(c[1] * 50000)

        return (
            xy(p.green), xy(p.blue), xy(p.red), xy(p.white),
            round(self.max_luminance * 10000), round(self.min_luminance * 10000),
        )

    def mdcv_box(self) -> bytes:
        g, b, r, wp, lmax, lmin = self._codes()
        return struct.pack(">I4s8H2I", 32, b"mdcv", *g, *b, *r, *wp, lmax, lmin)

    def clli_box(self) -> bytes:
        return struct.pack(">I4s2H", 12, b"clli", min(self.max_cll, 65535), min(self.max_fall, 65535))


def _iter_boxes(data: bytes | bytearray, start: int, end: int):
    off = start
    while off + 8 <= end:
        size, typ = struct.unpack_from(">I4s", data, off)
        header = 8
        if size == 1:
            size = struct.unpack_from(">Q", data, off + 8)[0]
            header = 16
        elif size == 0:
            size = end - off
        if size < header or off + size > end:
            raise ValueError(f"corrupt box {typ!r} at {off}")
        yield off, size, header, typ
        off += size


def _find_sample_entry(data: bytes | bytearray) -> tuple[list[tuple[int, int]], int, int]:
    """Chain of (offset, header) of moov…stsd and the (offset, size) of the HEVC sample entry."""

    def descend(start: int, end: int, chain: list[tuple[int, int]]):
        for off, size, header, typ in _iter_boxes(data, start, end):
            if typ in _CONTAINERS:
                found = descend(off + header, off + size, chain + [(off, header)])
                if found:
                    return found
            elif typ == b"stsd":
                for eoff, esize, _eh, etyp in _iter_boxes(data, off + header + 8, off + size):
                    if etyp in _HEVC_ENTRIES:
                        return chain + [(off, header)], eoff, esize
        return None

    found = descend(0, len(data), [])
    if not found:
        raise ValueError("no HEVC sample entry (hvc1/hev1) found")
    return found


def add_mp4_hdr10_boxes(path: str, meta: MasteringMetadata) -> None:
    """Append (or replace) ``mdcv`` and ``clli`` in the HEVC sample entry of an MP4 in place.

    The file must have its ``moov`` after ``mdat`` (FFmpeg's default without faststart), so that
    growing ``moov`` moves no sample data and chunk offsets stay valid.
    """
    with open(path, "rb") as fh:
        data = bytearray(fh.read())
    top = {typ: off for off, _s, _h, typ in _iter_boxes(data, 0, len(data))}
    if b"moov" not in top or b"mdat" not in top or top[b"moov"] < top[b"mdat"]:
        raise ValueError("add_mp4_hdr10_boxes needs an MP4 with moov after mdat")
    chain, eoff, esize = _find_sample_entry(data)
    # drop existing mdcv/clli children, then append fresh ones
    kept = bytearray()
    for off, size, _h, typ in _iter_boxes(data, eoff + _SAMPLE_ENTRY_HEADER, eoff + esize):
        if typ not in (b"mdcv", b"clli"):
            kept += data[off : off + size]
    new_children = bytes(kept) + meta.mdcv_box() + meta.clli_box()
    old_len = esize - _SAMPLE_ENTRY_HEADER
    delta = len(new_children) - old_len
    data[eoff + _SAMPLE_ENTRY_HEADER : eoff + esize] = new_children
    struct.pack_into(">I", data, eoff, esize + delta)
    for off, header in chain:
        if header != 8:
            raise ValueError("64-bit box sizes in moov are not supported")
        size = struct.unpack_from(">I", data, off)[0]
        struct.pack_into(">I", data, off, size + delta)
    with open(path, "r+b") as fh:
        fh.write(data)
        fh.truncate()


def _decode_mdcv(payload: bytes) -> dict[str, Any]:
    gx, gy, bx, by, rx, ry, wx, wy, lmax, lmin = struct.unpack(">8H2I", payload[:24])
    return {
        "mastering_primaries": {
            "red": (rx / 50000, ry / 50000), "green": (gx / 50000, gy / 50000),
            "blue": (bx / 50000, by / 50000), "white": (wx / 50000, wy / 50000),
        },
        "mastering_max_luminance": lmax / 10000,
        "mastering_min_luminance": lmin / 10000,
    }


def read_mp4_hdr10(path: str) -> dict[str, Any]:
    """``mdcv``/``clli`` of the first HEVC track of an MP4/MOV, as a dict (``{}`` if absent)."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        _chain, eoff, esize = _find_sample_entry(data)
    except ValueError:
        return {}
    out: dict[str, Any] = {}
    for off, size, header, typ in _iter_boxes(data, eoff + _SAMPLE_ENTRY_HEADER, eoff + esize):
        payload = data[off + header : off + size]
        if typ == b"mdcv":
            out.update(_decode_mdcv(payload))
        elif typ == b"clli":
            out["max_cll"], out["max_fall"] = struct.unpack(">2H", payload[:4])
        elif typ == b"colr" and payload[:4] == b"nclx":
            p, t, m, flags = struct.unpack(">3HB", payload[4:11])
            out.update(colour_primaries=p, transfer_characteristics=t, matrix_coefficients=m,
                       full_range=bool(flags & 0x80))
    return out


# ------------------------------------------------------------------------- Matroska (read)

_EBML_MASTER = {
    0x18538067: "Segment", 0x1654AE6B: "Tracks", 0xAE: "TrackEntry", 0xE0: "Video",
    0x55B0: "Colour", 0x55D0: "MasteringMetadata",
}
_MKV_UINT = {0x55B1: "matrix_coefficients", 0x55B9: "range", 0x55BA: "transfer_characteristics",
             0x55BB: "colour_primaries", 0x55BC: "max_cll", 0x55BD: "max_fall"}
_MKV_FLOAT = {0x55D1: ("red", 0), 0x55D2: ("red", 1), 0x55D3: ("green", 0), 0x55D4: ("green", 1),
              0x55D5: ("blue", 0), 0x55D6: ("blue", 1), 0x55D7: ("white", 0), 0x55D8: ("white", 1),
              0x55D9: "mastering_max_luminance", 0x55DA: "mastering_min_luminance"}


def _vint(data: bytes, off: int, keep_marker: bool) -> tuple[int, int]:
    first = data[off]
    length = 1
    mask = 0x80
    while length <= 8 and not first & mask:
        mask >>= 1
        length += 1
    if length > 8:
        raise ValueError("bad EBML vint")
    value = first if keep_marker else first & (mask - 1)
    for b in data[off + 1 : off + length]:
        value = (value << 8) | b
    return value, length


def read_mkv_hdr10(path: str, limit: int = 16 << 20) -> dict[str, Any]:
    """Colour/MasteringMetadata of the first video track of a Matroska/WebM file (``{}`` if none)."""
    with open(path, "rb") as fh:
        data = fh.read(limit)
    out: dict[str, Any] = {}
    prim: dict[str, list[float]] = {}

    def walk(start: int, end: int, depth: int) -> bool:
        off = start
        while off < end:
            try:
                eid, n1 = _vint(data, off, True)
                size, n2 = _vint(data, off + n1, False)
            except (ValueError, IndexError):
                return False
            body = off + n1 + n2
            unknown = size == (1 << (7 * n2)) - 1
            stop = end if unknown else min(body + size, end)
            if eid in _EBML_MASTER:
                if walk(body, stop, depth + 1) and eid == 0xAE:
                    return True
                if eid == 0x55B0:
                    return True
            elif eid in _MKV_UINT:
                out[_MKV_UINT[eid]] = int.from_bytes(data[body:stop], "big")
            elif eid in _MKV_FLOAT:
                raw = data[body:stop]
                val = struct.unpack(">f" if len(raw) == 4 else ">d", raw)[0]
                key = _MKV_FLOAT[eid]
                if isinstance(key, tuple):
                    prim.setdefault(key[0], [0.0, 0.0])[key[1]] = val
                else:
                    out[key] = val
            if unknown and eid not in _EBML_MASTER:
                return False
            off = stop
        return False

    walk(0, len(data), 0)
    if prim:
        out["mastering_primaries"] = {k: tuple(v) for k, v in prim.items()}
    return out
