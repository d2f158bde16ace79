#!/usr/bin/env python3
"""Re-measure the [film] table of every entry in engines/weights.toml with `hdrvideo filmtest`.

    python scripts/refilm.py

Run after a change to the film-test clips, their measurements or the device chain; the
weights themselves are untouched (tests/test_film.py checks that the tables reproduce).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hdrvideo.presets import load_preset  # noqa: E402
from hdrvideo.training.film import filmtest  # noqa: E402


def _fmt(v: float) -> str:
    return "0" if v == 0 else f"{v:.4g}"


def main() -> None:
    path = ROOT / "engines" / "weights.toml"
    text = path.read_text(encoding="utf-8")
    for name, entry in tomllib.loads(text).items():
        preset, style = entry["preset"], entry["style"]
        bars = filmtest(load_preset(preset).with_style(style), size=(96, 56), frames=10)["bars"]
        lines = [f'["{name}".film]',
                 f'command = "hdrvideo filmtest --preset {preset} --style {style} --size 96x56 --frames 10 --json"']
        lines += [f"{k} = {_fmt(v)}" for k, (v, _, _) in sorted(bars.items())]
        lines.append(f"all_bars_pass = {str(all(ok for _, _, ok in bars.values())).lower()}")
        table = re.compile(r'\["' + re.escape(name) + r'"\.film\]\n(?:[^\[\n][^\n]*\n)*')
        text, n = table.subn("\n".join(lines) + "\n", text)
        if n != 1:
            raise SystemExit(f"{name}: no [film] table to replace")
        print(name, {k: round(v, 4) for k, (v, _, _) in bars.items()})
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
