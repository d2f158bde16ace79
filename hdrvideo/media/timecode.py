"""SMPTE timecodes (ST 12-1): shifting a source's start timecode to the first converted frame.

A timecode names frames at a *nominal* integer rate (30 for 29.97 fps). Drop-frame timecode
(``HH:MM:SS;FF``, for 30000/1001 and 60000/1001 fps) skips the frame numbers 0 and 1 (0–3 at
60) at the start of every minute except every tenth (ST 12-1 §5.2.2), so that the
timecode keeps up with the clock.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["shift_timecode", "timecode_to_frames", "frames_to_timecode"]

_TC = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})([:;.,])(\d{2,3})$")


def _nominal(rate: Fraction) -> tuple[int, int]:
    """(nominal integer rate, frame numbers a drop-frame timecode skips a minute) at ``rate``.

    Drop frame exists for the NTSC rates 30000/1001 and 60000/1001 only (ST 12-1).
    """
    fps = round(rate)
    return fps, ({30: 2, 60: 4}.get(fps, 0) if Fraction(rate) != fps else 0)


def timecode_to_frames(text: str, rate: Fraction) -> tuple[int, bool]:
    """``HH:MM:SS:FF`` (``;`` before FF = drop frame) → (frame number, drop frame)."""
    m = _TC.match(text.strip())
    if not m:
        raise ValueError(f"not a timecode: {text!r}")
    hh, mm, ss, sep, ff = int(m[1]), int(m[2]), int(m[3]), m[4], int(m[5])
    fps, drop = _nominal(Fraction(rate))
    if fps <= 0 or mm > 59 or ss > 59 or ff >= fps:
        raise ValueError(f"timecode {text!r} does not fit {float(rate):g} fps")
    n = (hh * 3600 + mm * 60 + ss) * fps + ff
    drop_frame = sep in ";.," and drop > 0
    if drop_frame:
        minutes = hh * 60 + mm
        n -= drop * (minutes - minutes // 10)
    return n, drop_frame


def frames_to_timecode(n: int, rate: Fraction, drop_frame: bool) -> str:
    """Frame number → ``HH:MM:SS:FF`` (``;`` before FF for drop frame), wrapping at 24 h."""
    fps, drop = _nominal(Fraction(rate))
    if drop_frame and drop:
        per_10min = fps * 600 - drop * 9
        per_min = fps * 60 - drop
        tens, rest = divmod(n, per_10min)
        n += drop * 9 * tens + (drop * ((rest - drop) // per_min) if rest > drop else 0)
    ff = n % fps
    total_s = n // fps
    sep = ";" if drop_frame and drop else ":"
    return f"{total_s // 3600 % 24:02d}:{total_s // 60 % 60:02d}:{total_s % 60:02d}{sep}{ff:02d}"


def shift_timecode(text: str, rate: Fraction, seconds: Fraction, out_rate: Fraction | None = None) -> str:
    """The timecode ``seconds`` after ``text`` (of a ``rate`` fps stream), named at ``out_rate``.

    ``out_rate`` differs when the output has another frame rate. Deinterlaced to one frame per
    field, a 25 fps source timecode becomes a 50 fps one for the same instant. Inverse-telecined
    from 29.97 to 23.976 fps, the label keeps its hours, minutes and seconds, and its frames are
    counted at 24: film's 23.976 timecode is non-drop and relates to the video's label by the
    pulldown (4 film frames to 5 video frames a second), as editing systems convert it. For
    non-drop video this is also the same instant; a drop-frame label, which follows the clock,
    is read by its digits (``01:00:00;00`` becomes ``01:00:00:00``).
    """
    rate = Fraction(rate)
    out_rate = Fraction(out_rate) if out_rate else rate
    n, drop_frame = timecode_to_frames(text, rate)
    n += round(Fraction(seconds) * rate)
    out_drop = drop_frame and _nominal(out_rate)[1] > 0
    if out_rate != rate and drop_frame and not out_drop:
        digits = frames_to_timecode(max(n, 0), rate, True)  # the shifted label, read by its digits
        n = timecode_to_frames(digits.replace(";", ":"), Fraction(_nominal(rate)[0]))[0]
        rate = Fraction(_nominal(rate)[0])
        out_rate_nominal = Fraction(_nominal(out_rate)[0])
        return frames_to_timecode(max(int(n * out_rate_nominal // rate), 0), out_rate, False)
    if out_rate != rate:
        n = round(n * out_rate / rate)
    return frames_to_timecode(max(n, 0), out_rate, out_drop)
