"""Typer command functions for training and evaluation (registered by ``hdrvideo.cli``).

    hdrvideo train --arch irnet-2 --synth PHOTOS_DIR --out runs/itm [--steps N] [--resume]
    hdrvideo train --arch irnet-5-x4 --data HDRTV1K_DIR --out runs/sr4
    hdrvideo eval --preset sr4-itm --data DIR [--weights W] [--json]
    hdrvideo synth --photos PHOTOS_DIR --out DIR [--split test]    (HDRTV1K-layout PNGs)
    hdrvideo relabel CACHE OUT --teacher AGCM.pth      (real-grade targets for the "real" style)

Bad input raises :class:`hdrvideo.errors.InputError` with a one-line message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import InputError

__all__ = ["train_command", "eval_command", "synth_command", "filmtest_command", "relabel_command", "register"]


def _device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda requested but no CUDA device is available")
    return device


def _photos_dir(path: Path) -> Path:
    if not path.is_dir():
        raise InputError(f"photos folder not found: {path}")
    if not any(path.glob("*.hdr")):
        raise InputError(f"no .hdr photographs in {path}")
    return path


def _default_cache(kind: str, photos: Path, seed: int) -> Path:
    import hashlib

    from platformdirs import user_cache_dir

    h = hashlib.sha1(str(photos.resolve()).encode()).hexdigest()[:10]
    return Path(user_cache_dir("hdrvideo")) / "synth" / f"{kind}-{h}-s{seed}"


def _film_params(text: str | None) -> dict:
    if not text:
        return {}
    import dataclasses

    from .film import FilmAugment

    try:
        params = json.loads(text)
        FilmAugment(**params)
        if not isinstance(params, dict) or not {f.name for f in dataclasses.fields(FilmAugment)} >= set(params):
            raise TypeError
    except (ValueError, TypeError):
        raise InputError(f"--film-params must be a JSON object of FilmAugment fields, not {text!r}") from None
    return params


def train_command(
    arch: Annotated[str, typer.Option("--arch", help="architecture: irnet-2, irnet-5-x2, irnet-5-x4, gpgmnet-x4, …")],
    out: Annotated[Path, typer.Option("--out", help="run directory (checkpoint.safetensors, log.jsonl, <arch>.safetensors)")],
    data: Annotated[
        Optional[Path], typer.Option("--data", help="paired folder (HDRTV1K layout: train_sdr/ + train_hdr/) or a synthetic cache")
    ] = None,
    synth: Annotated[
        Optional[Path], typer.Option("--synth", help="folder of scene-linear .hdr photographs to synthesise pairs from")
    ] = None,
    cache: Annotated[Optional[Path], typer.Option("--cache", help="where the synthetic set is cached")] = None,
    steps: Annotated[int, typer.Option("--steps", min=1, help="optimiser steps")] = 10000,
    batch: Annotated[int, typer.Option("--batch", min=1)] = 16,
    patch: Annotated[int, typer.Option("--patch", min=8, help="input (low-resolution) patch size")] = 64,
    lr: Annotated[float, typer.Option("--lr", help="initial learning rate (Adam)")] = 5e-4,
    cycles: Annotated[int, typer.Option("--cycles", min=1, help="cosine warm-restart cycles (lengths double)")] = 2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto")] = "auto",
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="torch CPU threads")] = None,
    init: Annotated[Optional[Path], typer.Option("--init", help="warm start from weights with matching tensor names")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from OUT/checkpoint.safetensors")] = False,
    stop_after: Annotated[
        Optional[int], typer.Option("--stop-after", min=1, help="stop after N steps of this call (checkpointed; --resume continues)")
    ] = None,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", min=1)] = 200,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
    film: Annotated[bool, typer.Option("--film/--no-film", help="film augmentation: fades, black frames, bars, grain")] = False,
    film_params: Annotated[Optional[str], typer.Option("--film-params", help='JSON overrides of the film augmentation, e.g. \'{"grain": 0.6}\'')] = None,
    padding: Annotated[str, typer.Option("--padding", help="convolution border padding: zeros (papers) or replicate")] = "zeros",
    precision: Annotated[str, typer.Option("--precision", help="fp32, or bf16 (bfloat16 autocast for the forward passes; weights stay float32)")] = "fp32",
    subpixel_loss: Annotated[float, typer.Option("--subpixel-loss", min=0.0, help="weight of the fixed-pattern loss for SR networks: each sub-pixel position's mean error over the image (no PixelShuffle checkerboard)")] = 0.0,
    key_nits: Annotated[str, typer.Option("--key-nits", help="exposure key range of synthetic HDR grades, cd/m² (LO-HI)")] = "18-32",
) -> None:
    """Train an SDR→HDR10 network (L1 loss, Adam, cosine annealing with warm restarts)."""
    from ..models import architecture_names
    from .train import CHECKPOINT, TrainConfig, find_checkpoint, train

    if arch not in architecture_names():
        raise InputError(f"unknown architecture {arch!r}; choose one of {', '.join(architecture_names())}")
    if (data is None) == (synth is None):
        raise InputError("give exactly one of --data DIR or --synth PHOTOS_DIR")
    if data is not None:
        import os

        for part in str(data).split(os.pathsep):
            if part and not Path(part).is_dir():
                raise InputError(f"data folder not found: {part}")
    if synth is not None:
        _photos_dir(synth)
    if init is not None and not init.is_file():
        raise InputError(f"--init file not found: {init}")
    if resume and find_checkpoint(out) is None:
        raise InputError(f"nothing to resume: {out / CHECKPOINT} does not exist")
    dev = _device(device)
    if padding not in ("zeros", "replicate"):
        raise InputError("--padding must be zeros or replicate")
    if precision not in ("fp32", "bf16"):
        raise InputError("--precision must be fp32 or bf16")
    try:
        lo, hi = (float(v) for v in key_nits.split("-"))
        if not 0 < lo <= hi:
            raise ValueError
    except ValueError:
        raise InputError(f"--key-nits must be LO-HI in cd/m², e.g. 4-100, not {key_nits!r}") from None
    cfg = TrainConfig(
        arch=arch,
        out_dir=str(out),
        data=str(data) if data else None,
        synth=str(synth) if synth else None,
        cache_dir=str(cache) if cache else (str(_default_cache(f"train-k{lo:g}-{hi:g}", synth, seed)) if synth else None),
        steps=steps,
        batch=batch,
        patch=patch,
        lr=lr,
        cycles=cycles,
        seed=seed,
        device=dev,
        threads=threads,
        checkpoint_every=checkpoint_every,
        init=str(init) if init else None,
        film_augment=film,
        film_params=_film_params(film_params),
        padding_mode=padding, precision=precision, subpixel_loss=subpixel_loss,
        synth_key_nits=(lo, hi),
    )
    try:
        result = train(cfg, resume=resume, progress=not quiet, stop_after=stop_after)
    except (FileNotFoundError, ValueError) as err:
        raise InputError(str(err).splitlines()[0]) from err
    from ..cli import stdout as con

    msg = f"{arch}: {result['step']} steps, {result['elapsed_s']:.0f} s, loss (EMA) {result['loss_ema']:.4f}"
    if result.get("weights"):
        msg += f"; weights: {result['weights']}"
    con.print(msg)


def eval_command(
    preset: Annotated[str, typer.Option("--preset", help="preset to evaluate (itm, sr2-itm, sr4-itm, sr4-itm-gpgm, or .toml)")],
    data: Annotated[
        Optional[Path], typer.Option("--data", help="paired test folder (HDRTV1K layout: test_sdr/ + test_hdr/) or a synthetic cache")
    ] = None,
    synth: Annotated[
        Optional[Path], typer.Option("--synth", help="build the standard held-out set from these .hdr photographs instead")
    ] = None,
    cache: Annotated[Optional[Path], typer.Option("--cache", help="where the synthetic held-out set is cached")] = None,
    weights: Annotated[Optional[Path], typer.Option("--weights", help="weights file instead of the preset's")] = None,
    baseline: Annotated[str, typer.Option("--baseline", help="classical preset to compare against")] = "bt2408",
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto")] = "auto",
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="evaluate only the first N images")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    per_image: Annotated[bool, typer.Option("--per-image", help="include per-image figures in the JSON")] = False,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="torch CPU threads")] = None,
    compare_with: Annotated[
        Optional[list[str]],
        typer.Option("--compare", help="also score an external baseline: libplacebo or libplacebo-bt2446a (FFmpeg's inverse tone mapping; needs imageio-ffmpeg and Vulkan). Repeatable."),
    ] = None,
    style: Annotated[Optional[str], typer.Option("--style", help="the preset's weights of this style: real or broadcast (real: evaluate on a relabelled set)")] = None,
    teacher: Annotated[Optional[Path], typer.Option("--teacher", help="AGCM weights: also score the teacher (after bicubic upscaling for SR presets)")] = None,
) -> None:
    """PSNR / SSIM / ΔE_ITP of a preset and of the classical baseline on the same paired data."""
    import torch

    from ..errors import HdrvideoError
    from .evaluate import evaluate_preset, report_table

    if threads:
        torch.set_num_threads(threads)
    if (data is None) == (synth is None):
        raise InputError("give exactly one of --data DIR or --synth PHOTOS_DIR")
    if weights is not None and not weights.is_file():
        raise InputError(f"weights file not found: {weights}")
    if teacher is not None and not teacher.is_file():
        raise InputError(f"--teacher file not found: {teacher}")
    if data is not None:
        if not data.is_dir():
            raise InputError(f"data folder not found: {data}")
        target = data
    else:
        from .synthesis import build_synthetic_set, standard_test_config

        _photos_dir(synth)
        target = cache or _default_cache("test", synth, 0)
        build_synthetic_set(synth, target, standard_test_config())
    try:
        report = evaluate_preset(
            preset, target, device=_device(device), weights=str(weights) if weights else None, baseline=baseline,
            limit=limit, per_image=per_image, compare_with=tuple(compare_with or ()), style=style,
            teacher=str(teacher) if teacher else None,
        )
    except HdrvideoError:
        raise
    except (FileNotFoundError, ValueError) as err:
        raise InputError(str(err).splitlines()[0]) from err
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    else:
        from ..cli import stdout as con

        con.print(report_table(report))
        verdict = "passes" if report["passes_bar"] else "does NOT pass"
        if report.get("style") == "real":
            bar = ("≥ 38 dB PSNR and ΔE_ITP ≤ 10 against the teacher's grade" if report["scale"] == 1 else
                   "≥ 32 dB PSNR against the teacher's grade, above the teacher after bicubic upscaling")
            con.print(f"{report['preset']} (real) {verdict} the bar ({bar}; the teacher's grade is a proxy)")
        else:
            con.print(f"{report['preset']} {verdict} the bar (≥ 1.0 dB PSNR over {report['baseline']} and lower ΔE_ITP)")


def filmtest_command(
    preset: Annotated[str, typer.Option("--preset", help="preset to test (a neural one, or any .toml)")],
    weights: Annotated[Optional[Path], typer.Option("--weights", help="weights file instead of the preset's")] = None,
    size: Annotated[str, typer.Option("--size", help="input frame size WxH of the synthetic clips")] = "128x72",
    frames: Annotated[int, typer.Option("--frames", min=4, help="frames per clip")] = 12,
    temporal: Annotated[str, typer.Option("--temporal-smoothing", help="auto or off (as convert)")] = "auto",
    backend: Annotated[str, typer.Option("--backend", help="torch, onnxruntime, …")] = "torch",
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto")] = "cpu",
    style: Annotated[Optional[str], typer.Option("--style", help="the preset's weights of this style: real or broadcast")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
) -> None:
    """Fades, cuts, a pan, letterbox, black and grain through a preset's device chain, measured
    frame by frame next to bt2408 (the "real films" bars)."""
    from ..presets import load_preset
    from .film import filmtest

    if weights is not None and not weights.is_file():
        raise InputError(f"weights file not found: {weights}")
    if temporal not in ("auto", "off"):
        raise InputError("--temporal-smoothing must be auto or off")
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise InputError(f"--size must be WxH, not {size!r}") from None
    if w % 2 or h % 2 or w < 32 or h < 32:
        raise InputError("--size must be even and at least 32x32")
    p = load_preset(preset).resolve(h)
    if style is not None:
        p = p.with_style(style, str(weights) if weights else None)
    result = filmtest(p, str(weights) if weights else None, backend, _device(device), (w, h), frames, temporal)
    if as_json:
        bars = {k: {"value": v, "limit": lim, "passed": ok} for k, (v, lim, ok) in result["bars"].items()}
        typer.echo(json.dumps({"preset": p.name, "size": [w, h], "frames": frames, "temporal_smoothing": temporal,
                               "bars": bars, "clips": result["preset"], "bt2408": result["bt2408"]}, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"film test: {p.name} ({w}×{h}, {frames} frames, temporal smoothing {temporal})")
    for col in ("measure", "value", "bar", ""):
        table.add_column(col)
    from .film import BARS

    for name, (value, limit, ok) in result["bars"].items():
        table.add_row(name, f"{value:.4g}", f"{BARS[name][0]} {limit:g}", "ok" if ok else "FAIL")
    Console().print(table)


def synth_command(
    photos: Annotated[Path, typer.Option("--photos", help="folder of scene-linear .hdr photographs")],
    out: Annotated[Path, typer.Option("--out", help="output folder ({split}_sdr/, {split}_hdr/, {split}_sdr_x2/, …)")],
    split: Annotated[str, typer.Option("--split", help="test (held-out scenes) or train")] = "test",
    views: Annotated[Optional[int], typer.Option("--views", min=1, help="crops per scene")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    cache: Annotated[Optional[Path], typer.Option("--cache", help="cache folder for the arrays")] = None,
) -> None:
    """Synthesise SDR/HDR10 pairs from HDR photographs and write them as HDRTV1K-layout PNGs."""
    from dataclasses import replace

    from .synthesis import SynthConfig, build_synthetic_set, export_png, standard_test_config

    _photos_dir(photos)
    if split not in ("train", "test"):
        raise InputError("--split must be train or test")
    cfg = standard_test_config(seed) if split == "test" else SynthConfig(split="train", seed=seed, variants=1)
    if views:
        cfg = replace(cfg, views_per_scene=views)
    c = cache or _default_cache(split, photos, seed)
    build_synthetic_set(photos, c, cfg)
    export_png(c, out, split)
    typer.echo(f"wrote {split} pairs to {out}")


def relabel_command(
    cache: Annotated[Path, typer.Argument(help="a synthetic cache (the arrays of hdrvideo synth --cache DIR, or of train --synth)")],
    out: Annotated[Path, typer.Argument(help="the relabelled cache to write")],
    teacher: Annotated[Path, typer.Option("--teacher", help="the teacher's weights: AGCM (.pth or .safetensors)")],
    teacher_arch: Annotated[str, typer.Option("--teacher-arch", help="the teacher's architecture")] = "agcm",
    force: Annotated[bool, typer.Option("-f", "--force", help="overwrite OUT")] = False,
) -> None:
    """Grade a synthetic set's SDR renditions with a teacher network: targets of the real style."""
    from ..models import load_model
    from .relabel import relabel_set

    if not (cache / "meta.json").is_file() or not (cache / "hdr.npy").is_file():
        raise InputError(f"not a synthetic cache (no meta.json/hdr.npy): {cache}; `hdrvideo synth --cache DIR` writes one")
    if not teacher.is_file():
        raise InputError(f"--teacher file not found: {teacher}")
    if out.exists() and not force:
        raise InputError(f"{out} exists (use --force to overwrite)")
    model = load_model(teacher_arch, teacher).eval()
    relabel_set(cache, out, model, teacher_arch,
                progress=lambda i, n: typer.echo(f"{i}/{n}", err=True) if i % 100 == 0 or i == n else None)
    typer.echo(str(out))


def register(app, handle_errors=lambda f: f) -> None:
    """Attach ``train``, ``eval``, ``synth``, ``filmtest`` and ``relabel`` to the main typer app (called by hdrvideo.cli)."""
    app.command("train")(handle_errors(train_command))
    app.command("filmtest")(handle_errors(filmtest_command))
    app.command("eval")(handle_errors(eval_command))
    app.command("synth")(handle_errors(synth_command))
    app.command("relabel")(handle_errors(relabel_command))
