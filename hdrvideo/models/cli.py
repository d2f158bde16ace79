"""``hdrvideo models``: the architecture registry as a table or JSON."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def models_command(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List network architectures: parameters, scale, presets using them, installed weights."""
    from rich.table import Table

    from ..cli import stdout
    from ..presets import find_weights, list_presets
    from . import list_architectures

    presets_by_arch: dict[str, list] = {}
    for p in list_presets():
        if p.model is not None:
            presets_by_arch.setdefault(p.model.arch, []).append(p)
    rows = []
    for spec in list_architectures():
        ps = presets_by_arch.get(spec["name"], [])
        installed = [str(w) for w in (find_weights(p) for p in ps) if w is not None]
        rows.append({**spec, "presets": [p.name for p in ps], "weights_installed": bool(installed),
                     "weights": installed[0] if installed else None})
    if as_json:
        stdout.print_json(json.dumps(rows))
        return
    table = Table(box=None, header_style="bold")
    for col in ("architecture", "params", "scale", "presets", "weights", "description"):
        table.add_column(col, justify="right" if col in ("params", "scale") else "left")
    for r in rows:
        table.add_row(r["name"], f"{r['params']:,}", f"×{r['scale']}", ", ".join(r["presets"]) or "-",
                      "installed" if r["weights_installed"] else "-", r["description"])
    stdout.print(table)


def register(app, handle_errors=lambda f: f) -> None:
    app.command("models")(handle_errors(models_command))
