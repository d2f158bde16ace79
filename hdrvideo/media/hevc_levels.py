"""HEVC levels and tiers: what a declared ``--level`` allows (ITU-T H.265 Annex A).

The limits are those of H.265 (V8, 08/2021) A.4.1, Table A.8 (general tier and level limits:
MaxLumaPs, MaxCPB) and Table A.9 (MaxLumaSr, MaxBR) for the Main and Main 10 profiles, whose
CpbBrNalFactor is 1100 bits (Table A.10): a picture of PicSizeInSamplesY luma samples needs
PicSizeInSamplesY ≤ MaxLumaPs and each side ≤ √(8·MaxLumaPs); the luma sample rate must stay
within MaxLumaSr, the NAL HRD bit rate within 1100·MaxBR and the CPB within 1100·MaxCPB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from ..errors import UsageError

__all__ = ["Level", "LEVELS", "parse_level", "check_level"]

CPB_BR_NAL_FACTOR = 1100  # Main 10 (H.265 Table A.10)
MIN_CB_SIZE = 8  # x265's minimum coding block: pictures are coded padded to multiples of it


@dataclass(frozen=True)
class Level:
    name: str  # "5.1"
    idc: int  # general_level_idc = 30 × level (5.1 → 153)
    max_luma_ps: int  # samples
    max_cpb_main: int  # 1000 bits (CpbBrVclFactor units)
    max_cpb_high: int | None
    max_luma_sr: int  # samples per second
    max_br_main: int  # 1000 bit/s
    max_br_high: int | None


LEVELS: dict[str, Level] = {lv.name: lv for lv in (
    Level("1", 30, 36_864, 350, None, 552_960, 128, None),
    Level("2", 60, 122_880, 1_500, None, 3_686_400, 1_500, None),
    Level("2.1", 63, 245_760, 3_000, None, 7_372_800, 3_000, None),
    Level("3", 90, 552_960, 6_000, None, 16_588_800, 6_000, None),
    Level("3.1", 93, 983_040, 10_000, None, 33_177_600, 10_000, None),
    Level("4", 120, 2_228_224, 12_000, 30_000, 66_846_720, 12_000, 30_000),
    Level("4.1", 123, 2_228_224, 20_000, 50_000, 133_693_440, 20_000, 50_000),
    Level("5", 150, 8_912_896, 25_000, 100_000, 267_386_880, 25_000, 100_000),
    Level("5.1", 153, 8_912_896, 40_000, 160_000, 534_773_760, 40_000, 160_000),
    Level("5.2", 156, 8_912_896, 60_000, 240_000, 1_069_547_520, 60_000, 240_000),
    Level("6", 180, 35_651_584, 60_000, 240_000, 1_069_547_520, 60_000, 240_000),
    Level("6.1", 183, 35_651_584, 120_000, 480_000, 2_139_095_040, 120_000, 480_000),
    Level("6.2", 186, 35_651_584, 240_000, 800_000, 4_278_190_080, 240_000, 800_000),
)}
TIERS = ("main", "high")


def parse_level(value: str | float | int | None) -> str:
    """``"5.1"``, ``5.1``, ``"51"`` or ``153`` → ``"5.1"``; ``None``/``""``/0 → ``""`` (encoder's choice)."""
    if value is None or value == "" or value == 0:
        return ""
    text = str(value).strip().lower().removeprefix("l")
    if text.endswith(".0"):
        text = text[:-2]
    if text in LEVELS:
        return text
    if text.isdigit():  # level × 10 (x265's "51"), else general_level_idc (153)
        for code in (lambda lv: lv.idc // 3, lambda lv: lv.idc):
            for lv in LEVELS.values():
                if int(text) == code(lv):
                    return lv.name
    raise UsageError(f"unknown HEVC level {value!r} (choose from {', '.join(LEVELS)})")


def check_level(level: str, tier: str, width: int, height: int, rate: Fraction | float | None,
                bitrate: int = 0, maxrate: int = 0, bufsize: int = 0) -> None:
    """Refuse (one line) a level/tier that this picture size, frame rate or bit rate cannot fit."""
    if not level:
        return
    if tier not in TIERS:
        raise UsageError(f"unknown HEVC tier {tier!r} (choose main or high)")
    lv = LEVELS[level]
    if tier == "high" and lv.max_br_high is None:
        raise UsageError(f"HEVC level {level} has no high tier (levels 4 and above do)")
    w = math.ceil(width / MIN_CB_SIZE) * MIN_CB_SIZE
    h = math.ceil(height / MIN_CB_SIZE) * MIN_CB_SIZE
    side = math.isqrt(8 * lv.max_luma_ps)
    if w * h > lv.max_luma_ps or w > side or h > side:
        raise UsageError(
            f"HEVC level {level} cannot hold {width}×{height} pictures (at most {lv.max_luma_ps} luma samples, "
            f"{side} per side; H.265 Table A.8)")
    if rate:
        sr = w * h * float(rate)
        if sr > lv.max_luma_sr:
            raise UsageError(
                f"HEVC level {level} cannot hold {width}×{height} at {float(rate):.3f} fps "
                f"({sr:.4g} luma samples/s > MaxLumaSr {lv.max_luma_sr}; H.265 Table A.9)")
    max_br = (lv.max_br_high if tier == "high" else lv.max_br_main) * CPB_BR_NAL_FACTOR
    max_cpb = (lv.max_cpb_high if tier == "high" else lv.max_cpb_main) * CPB_BR_NAL_FACTOR
    peak = maxrate or bitrate
    if peak > max_br:
        raise UsageError(f"HEVC level {level} {tier} tier allows at most {max_br / 1e6:g} Mbit/s; "
                         f"{'--maxrate' if maxrate else '--bitrate'} is {peak / 1e6:g} Mbit/s")
    if bufsize > max_cpb:
        raise UsageError(f"HEVC level {level} {tier} tier allows a buffer of at most {max_cpb / 1e6:g} Mbit; "
                         f"--bufsize is {bufsize / 1e6:g} Mbit")
