"""The "real films" bars for every shipped neural preset, on clips the test makes itself:
fade out and in, hard cuts, a pan into daylight, letterbox, black frames and grain, each run
through the conversion's own device chain (scene cuts, temporal smoothing, roll-off) and
measured frame by frame next to bt2408 (see hdrvideo.training.film and `hdrvideo filmtest`)."""

from __future__ import annotations

import tomllib

import pytest

from hdrvideo.presets import load_preset
from hdrvideo.training.film import BARS, filmtest

from conftest import REPO

MANIFEST = tomllib.loads((REPO / "engines" / "weights.toml").read_text(encoding="utf-8"))
PRESETS = sorted({entry["preset"] for entry in MANIFEST.values()})


@pytest.fixture(scope="module", params=PRESETS)
def film(request):
    return request.param, filmtest(load_preset(request.param), size=(96, 56), frames=10)


@pytest.mark.parametrize("bar", sorted(BARS))
def test_bar(film, bar):
    preset, result = film
    value, limit, passed = result["bars"][bar]
    assert passed, f"{preset}: {bar} = {value:.4g}, bar {BARS[bar][0]} {limit}"


def test_black_frames_decode_to_black_including_the_border(film):
    _, result = film
    black = result["preset"]["black"]
    assert black["black_max_nits"] <= 0.2 and black["black_mean_nits"] <= 0.05
    # bt2408 maps code 16 to exactly 0 cd/m²: the reference for "black stays black"
    assert result["bt2408"]["black"]["black_max_nits"] == 0.0


def test_cuts_are_followed_at_once(film):
    """Day → night → day: the output's brightness moves with the input's at each cut."""
    _, result = film
    cut = result["preset"]["cut"]
    ins, outs = cut["in_mean"], cut["out_mean"]
    k = len(ins) // 3
    assert outs[k] < 0.5 * outs[k - 1] and ins[k] < 0.5 * ins[k - 1]  # into the night
    assert outs[2 * k] > 2 * outs[2 * k - 1]  # back to day
