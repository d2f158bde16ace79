"""The colour standards' constants as plain Python data: primaries, luma coefficients, chroma siting.

No maths and no torch here, so that describing a file (``hdrvideo probe``) or a preset
(``hdrvideo presets``) does not load torch; :mod:`hdrvideo.colour` re-exports these names and
does all the maths.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Chromaticities", "D65", "PRIMARIES", "KR_KB", "CHROMA_SITING"]


@dataclass(frozen=True)
class Chromaticities:
    """CIE 1931 xy of the red, green and blue primaries and the white point."""

    red: tuple[float, float]
    green: tuple[float, float]
    blue: tuple[float, float]
    white: tuple[float, float]


D65 = (0.3127, 0.3290)

PRIMARIES: dict[str, Chromaticities] = {
    # BT.709-6 Table 1 item 1.3/1.4 (also sRGB)
    "bt709": Chromaticities((0.640, 0.330), (0.300, 0.600), (0.150, 0.060), D65),
    # BT.2020-2 Table 3 (also BT.2100)
    "bt2020": Chromaticities((0.708, 0.292), (0.170, 0.797), (0.131, 0.046), D65),
    # SMPTE EG 432-1 P3 primaries with a D65 white (the usual HDR10 mastering display)
    "p3-d65": Chromaticities((0.680, 0.320), (0.265, 0.690), (0.150, 0.060), D65),
    # BT.601-7 625-line (EBU) and 525-line (SMPTE C) primaries
    "bt601-625": Chromaticities((0.640, 0.330), (0.290, 0.600), (0.150, 0.060), D65),
    "bt601-525": Chromaticities((0.630, 0.340), (0.310, 0.595), (0.155, 0.070), D65),
}

#: Luma coefficients (K_R, K_B) of the non-constant-luminance Y'CbCr matrices.
KR_KB: dict[str, tuple[float, float]] = {
    "bt601": (0.299, 0.114),  # BT.601-7 §2.5.1
    "bt709": (0.2126, 0.0722),  # BT.709-6 item 3.2
    "bt2020": (0.2627, 0.0593),  # BT.2020-2 Table 4 (non-constant luminance)
}


#: Position of the chroma sample inside its luma cell, as fractions (horizontal, vertical)
#: of the cell: 0 = co-sited with the first luma sample, 0.5 = centred, 1 = last.
CHROMA_SITING: dict[str, tuple[float, float]] = {
    "left": (0.0, 0.5),  # H.273 type 0: MPEG-2/H.264/HEVC default
    "center": (0.5, 0.5),  # type 1: MPEG-1/JPEG
    "topleft": (0.0, 0.0),  # type 2: BT.2020 / DCI
    "top": (0.5, 0.0),
    "bottomleft": (0.0, 1.0),
    "bottom": (0.5, 1.0),
}
