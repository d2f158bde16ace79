"""Training loop: L1 loss, Adam, cosine annealing with warm restarts, resumable checkpoints.

Recipe (IRNet paper style): L1 between the network's PQ BT.2020 output and the HDR10 target,
Adam (β 0.9/0.999), learning rate following ``CosineAnnealingWarmRestarts`` with ``cycles``
cycles whose lengths double (T_0 = steps / (2^cycles − 1), T_mult = 2), so the last cycle ends
at the final step.  Batches are a pure function of ``(seed, step)`` (:func:`sample_batch`) and
the torch RNG is re-seeded from ``(seed, step)`` before every step (dropout/DropBlock), so a run
is reproducible and a resumed run continues exactly as an uninterrupted one would (on the same
device and thread count).

Files in ``out_dir``: ``checkpoint.pt`` (model, optimiser, scheduler, step, config, elapsed
seconds, loss history; written every ``checkpoint_every`` steps and at the end, atomically),
``log.jsonl`` (one line per ``log_every`` steps), ``<arch>-step<N>.safetensors`` snapshots at the
end of every cosine cycle but the last (learning rate at its minimum) and ``<arch>.safetensors``
(final weights with provenance metadata).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .datasets import PairSource, open_pairs, sample_batch

__all__ = ["TrainConfig", "train", "make_source", "load_checkpoint", "warm_start"]


@dataclass
class TrainConfig:
    arch: str
    out_dir: str
    #: HDRTV1K-layout folder or a synthetic cache directory
    data: str | None = None
    #: folder of HDR photographs to synthesise from (cached in ``cache_dir``)
    synth: str | None = None
    cache_dir: str | None = None
    steps: int = 10000
    batch: int = 16
    #: input (LR) patch size
    patch: int = 64
    lr: float = 5e-4
    lr_min: float = 1e-6
    cycles: int = 2
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    checkpoint_every: int = 200
    log_every: int = 10
    #: warm start: weights/checkpoint whose same-named, same-shaped tensors are copied
    init: str | None = None
    #: synthetic cache parameters (only with ``synth``)
    synth_views: int = 48
    synth_size: int = 192
    synth_variants: int = 2
    extra: dict = field(default_factory=dict)


def make_source(cfg: TrainConfig, scale: int, progress: Callable | None = None) -> PairSource:
    """The training data of ``cfg`` at ``scale`` (building the synthetic cache if needed)."""
    if cfg.data:
        return open_pairs(cfg.data, "train", scale)
    if not cfg.synth:
        raise ValueError("give either data (a paired folder) or synth (a folder of HDR photographs)")
    from .synthesis import SynthConfig, build_synthetic_set

    scfg = SynthConfig(
        split="train",
        views_per_scene=cfg.synth_views,
        height=cfg.synth_size,
        width=cfg.synth_size,
        variants=cfg.synth_variants,
        seed=cfg.seed,
    )
    cache = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out_dir) / "synth-train"
    build_synthetic_set(cfg.synth, cache, scfg, progress=progress)
    return open_pairs(cache, "train", scale)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def warm_start(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Copy every tensor of ``path`` (checkpoint.pt or weights file) whose name and shape match."""
    p = Path(path)
    if p.suffix == ".pt" and p.name.startswith("checkpoint"):
        sd = load_checkpoint(p)["model"]
    else:
        from ..models import read_state_dict

        sd = read_state_dict(str(p))
    own = model.state_dict()
    copied = [k for k, v in sd.items() if k in own and own[k].shape == v.shape]
    own.update({k: sd[k] for k in copied})
    model.load_state_dict(own)
    return copied


def _cosine_restarts(opt, cfg: TrainConfig):
    t0 = max(1, math.ceil(cfg.steps / (2**cfg.cycles - 1)))
    return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=t0, T_mult=2, eta_min=cfg.lr_min)


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(
    cfg: TrainConfig,
    resume: bool | str = False,
    progress: bool = True,
    stop_after: int | None = None,
    source: PairSource | None = None,
) -> dict[str, Any]:
    """Run (or resume) a training run; returns a summary dict.

    ``resume``: True → ``out_dir/checkpoint.pt``; a path → that checkpoint.  ``stop_after``
    stops after that many steps of this call (for tests / time-boxed sessions) after writing a
    checkpoint.  ``source`` overrides the data of ``cfg``.
    """
    from ..models import create, save_weights

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)

    state = None
    if resume:
        ck = out / "checkpoint.pt" if resume is True else Path(resume)
        if not ck.exists():
            raise FileNotFoundError(f"no checkpoint to resume at {ck}")
        state = load_checkpoint(ck)
        if state["config"]["arch"] != cfg.arch:
            raise ValueError(f"checkpoint is for {state['config']['arch']}, not {cfg.arch}")

    torch.manual_seed(cfg.seed)
    model = create(cfg.arch)
    model.to(device).train()
    if source is None:
        source = make_source(cfg, model.scale)
    if source.scale != model.scale:
        raise ValueError(f"data scale ×{source.scale} does not match {cfg.arch} (×{model.scale})")
    copied: list[str] = []
    if cfg.init and state is None:
        copied = warm_start(model, cfg.init)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    sched = _cosine_restarts(opt, cfg)
    step, elapsed, history = 0, 0.0, []
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, elapsed, history = state["step"], state["elapsed"], state["history"]
        copied = state.get("warm_started", [])

    def checkpoint() -> None:
        _save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "step": step,
                "elapsed": elapsed,
                "history": history,
                "config": asdict(cfg),
                "warm_started": copied,
            },
            out / "checkpoint.pt",
        )

    log = open(out / "log.jsonl", "a")
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn(f"[bold]{cfg.arch}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f} lr {task.fields[lr]:.2e}"),
            TimeRemainingColumn(),
        )
        bar.start()
        task = bar.add_task("train", total=cfg.steps, completed=step, loss=float("nan"), lr=opt.param_groups[0]["lr"])
    t0 = max(1, math.ceil(cfg.steps / (2**cfg.cycles - 1)))
    cycle_ends = {t0 * (2**k - 1) for k in range(1, cfg.cycles + 1)}
    ema = history[-1]["loss_ema"] if history else None
    start_step, t_last = step, time.perf_counter()
    try:
        while step < cfg.steps:
            x, y = sample_batch(source, step, cfg.batch, cfg.patch, seed=cfg.seed)
            x, y = x.to(device), y.to(device)
            torch.manual_seed(cfg.seed * 1_000_003 + step)
            pred = model(x)
            loss = (pred - y).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            now = time.perf_counter()
            elapsed += now - t_last
            t_last = now
            lv = float(loss.detach())
            ema = lv if ema is None else 0.98 * ema + 0.02 * lv
            if step % cfg.log_every == 0 or step == cfg.steps:
                rec = {"step": step, "loss": lv, "loss_ema": ema, "lr": opt.param_groups[0]["lr"], "elapsed": round(elapsed, 2)}
                history.append(rec)
                log.write(json.dumps(rec) + "\n")
                log.flush()
            if bar is not None:
                bar.update(task, completed=step, loss=ema, lr=opt.param_groups[0]["lr"])
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                checkpoint()
            if step in cycle_ends and step < cfg.steps:
                # end of a cosine cycle (learning rate at its minimum): keep a usable snapshot
                snap = out / f"{cfg.arch}-step{step}.safetensors"
                was_training = model.training
                model.eval()
                save_weights(model, str(snap), metadata={"arch": cfg.arch, "steps": str(step), "seed": str(cfg.seed)})
                model.train(was_training)
            if stop_after is not None and step - start_step >= stop_after:
                checkpoint()
                break
    finally:
        if bar is not None:
            bar.stop()
        log.close()

    result: dict[str, Any] = {
        "arch": cfg.arch,
        "step": step,
        "finished": step >= cfg.steps,
        "elapsed_s": round(elapsed, 1),
        "loss_ema": ema,
        "history": history,
        "checkpoint": str(out / "checkpoint.pt"),
        "warm_started": len(copied),
    }
    if step >= cfg.steps:
        model.eval()
        weights = out / f"{cfg.arch}.safetensors"
        meta = {
            "arch": cfg.arch,
            "steps": str(step),
            "seed": str(cfg.seed),
            "batch": str(cfg.batch),
            "patch": str(cfg.patch),
            "lr": f"{cfg.lr:g}",
            "data": str(cfg.data or cfg.synth),
            "wall_time_s": f"{elapsed:.0f}",
            "loss": "L1 on PQ BT.2020 R'G'B'",
        }
        save_weights(model.cpu(), str(weights), metadata=meta)
        result["weights"] = str(weights)
    return result
