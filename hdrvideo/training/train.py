"""Training loop: L1 loss, Adam, cosine annealing with warm restarts, resumable checkpoints.

Recipe (IRNet paper style): L1 between the network's PQ BT.2020 output and the HDR10 target,
Adam (β 0.9/0.999), learning rate following ``CosineAnnealingWarmRestarts`` with ``cycles``
cycles whose lengths double (T_0 = steps / (2^cycles − 1), T_mult = 2), so the last cycle ends
at the final step.  Batches are a pure function of ``(seed, step)`` (:func:`sample_batch`) and
the torch RNG is re-seeded from ``(seed, step)`` before every step (dropout/DropBlock), so a run
is reproducible and a resumed run continues exactly as an uninterrupted one would (on the same
device and thread count).

Files in ``out_dir``: ``checkpoint.safetensors`` (model, optimiser, scheduler, step, config,
elapsed seconds, loss history; written every ``checkpoint_every`` steps and at the end,
atomically; see :func:`save_checkpoint` — nothing in it is unpickled),
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

__all__ = ["TrainConfig", "train", "fixed_pattern_loss", "make_source", "load_checkpoint", "save_checkpoint", "warm_start",
           "CHECKPOINT", "find_checkpoint"]

#: the training checkpoint in a run directory
CHECKPOINT = "checkpoint.safetensors"
#: what older versions wrote (a pickle); still read, with tensors and plain containers only
LEGACY_CHECKPOINT = "checkpoint.pt"


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
    #: exposure key range of the synthetic HDR grades, cd/m² (log-uniform)
    synth_key_nits: tuple[float, float] = (18.0, 32.0)
    #: film augmentation (fades, black frames, bars, grain; :mod:`hdrvideo.training.film`)
    film_augment: bool = False
    #: overrides of :class:`~hdrvideo.training.film.FilmAugment`'s probabilities and ranges
    film_params: dict = field(default_factory=dict)
    #: convolution border padding of the model ("zeros" as the papers, "replicate")
    padding_mode: str = "zeros"
    #: "fp32", or "bf16": forward passes under bfloat16 autocast (weights, optimiser and loss
    #: stay float32); 1.6× faster per step on an AVX512-BF16 CPU at the same held-out PSNR
    precision: str = "fp32"
    #: weight of :func:`fixed_pattern_loss` (SR networks): no fixed sub-pixel checkerboard
    subpixel_loss: float = 0.0
    extra: dict = field(default_factory=dict)


def fixed_pattern_loss(pred: torch.Tensor, target: torch.Tensor, scale: int) -> torch.Tensor:
    """Mean absolute offset of each sub-pixel position of the ``scale``×``scale`` output blocks
    from the blocks' mean, of the error averaged over each image: the fixed checkerboard that an
    upsampling layer (PixelShuffle; Odena et al., Distill 2016) can leave on flat areas, which a
    per-pixel L1 loss sees as a small part of its error. 0 for ``scale`` 1."""
    if scale <= 1:
        return pred.new_zeros(())
    err = pred - target
    b, c, h, w = err.shape
    blocks = err[..., : h // scale * scale, : w // scale * scale].reshape(b, c, h // scale, scale, w // scale, scale)
    phase = blocks.mean(dim=(2, 4))  # (b, c, s, s): each position's mean error over the image
    return (phase - phase.mean(dim=(2, 3), keepdim=True)).abs().mean()


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
        key_nits=tuple(cfg.synth_key_nits),
        seed=cfg.seed,
    )
    cache = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out_dir) / "synth-train"
    build_synthetic_set(cfg.synth, cache, scfg, progress=progress)
    return open_pairs(cache, "train", scale)


def _encode(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """``obj`` as JSON data with every tensor moved into ``tensors`` (key = its path)."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": path}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{path}/{k}") for k, v in obj.items()}
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"cannot store a {type(k).__name__} key in a checkpoint ({path})")
            items.append([k, _encode(v, tensors, f"{path}/{k}")])
        return {"__items__": items}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint ({path})")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`_encode`: builds only dicts, lists, tuples, numbers, strings and tensors."""
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__tuple__"}:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if set(obj) == {"__items__"}:
            return {k: _decode(v, tensors) for k, v in obj["__items__"]}
        return {k: _decode(v, tensors) for k, v in obj.items()}
    return obj


def save_checkpoint(state: dict[str, Any], path: str | Path, model_metadata: dict[str, str] | None = None) -> None:
    """Write a training state (nested dicts/lists of tensors and plain values) atomically as one
    safetensors file: the tensors, keyed by their path (``model/<name>``, ``optimizer/state/…``),
    and the rest as JSON in the header metadata. Loading it runs no code (no pickle).
    ``model_metadata`` (arch, padding_mode, …) is stored beside, so the checkpoint also loads
    as weights with the model's settings."""
    from safetensors.torch import save_file

    from ..models.weights import CHECKPOINT_FORMAT

    tensors: dict[str, torch.Tensor] = {}
    skeleton = {k: _encode(v, tensors, k) for k, v in state.items()}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    meta = {**(model_metadata or {}), "format": CHECKPOINT_FORMAT, "state": json.dumps(skeleton)}
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, or a legacy ``checkpoint.pt``
    restricted to tensors and plain containers (``torch.load(weights_only=True)``): a file that
    would need anything else — possibly code — is refused with a :class:`WeightsError`."""
    from ..errors import WeightsError
    from ..models.weights import CHECKPOINT_FORMAT, safe_torch_load

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        state = safe_torch_load(path)
        if not isinstance(state, dict) or "model" not in state:
            raise WeightsError(f"{path} is not a training checkpoint")
        return state
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise WeightsError(f"{path} is not a training checkpoint (no hdrvideo training state in it)")
        return _decode(json.loads(meta["state"]), tensors)
    except WeightsError:
        raise
    except Exception as err:  # noqa: BLE001 - safetensors, JSON and key errors alike
        raise WeightsError(f"cannot read checkpoint {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def find_checkpoint(out_dir: str | Path) -> Path | None:
    """The run directory's checkpoint (``checkpoint.safetensors``, else a legacy ``checkpoint.pt``)."""
    for name in (CHECKPOINT, LEGACY_CHECKPOINT):
        if (Path(out_dir) / name).is_file():
            return Path(out_dir) / name
    return None


def warm_start(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Copy every tensor of ``path`` (a checkpoint or a weights file) whose name and shape match."""
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
        ck = (find_checkpoint(out) or out / CHECKPOINT) if resume is True else Path(resume)
        if not ck.exists():
            raise FileNotFoundError(f"no checkpoint to resume at {ck}")
        state = load_checkpoint(ck)
        if state["config"]["arch"] != cfg.arch:
            raise ValueError(f"checkpoint is for {state['config']['arch']}, not {cfg.arch}")

    torch.manual_seed(cfg.seed)
    model = create(cfg.arch, padding_mode=cfg.padding_mode)
    model.to(device).train()
    copied: list[str] = []
    if cfg.init and state is None:  # before the data: a bad --init file fails fast
        copied = warm_start(model, cfg.init)
    if source is None:
        source = make_source(cfg, model.scale)
    if source.scale != model.scale:
        raise ValueError(f"data scale ×{source.scale} does not match {cfg.arch} (×{model.scale})")
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
        save_checkpoint(
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
            out / CHECKPOINT,
            model_metadata={"arch": cfg.arch, "scale": str(model.scale), "colour_domain": model.colour_domain,
                            "padding_mode": model.padding_mode, **getattr(model, "required_metadata", {})},
        )

    log = open(out / "log.jsonl", "a")
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn(cfg.arch.replace("{", "{{").replace("}", "}}"), style="bold", markup=False),
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
    film = None
    if cfg.film_augment:
        from .film import FilmAugment

        film = FilmAugment(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.film_params.items()})
    if cfg.precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, not {cfg.precision!r}")
    bf16 = cfg.precision == "bf16"
    try:
        while step < cfg.steps:
            batch = sample_batch(source, step, cfg.batch, cfg.patch, seed=cfg.seed, film=film)
            x, y = batch[0].to(device), batch[1].to(device)
            torch.manual_seed(cfg.seed * 1_000_003 + step)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                if film is not None:  # statistics from the context inputs (another exposure at times)
                    ctx = model.global_context(batch[2].to(device))
                    pred = model(x, context=ctx).float()
                    loss = (pred - y).abs().mean()
                    if film.stability > 0:  # two grain draws of one picture must give one output
                        pred2 = model(batch[3].to(device), context=ctx).float()
                        loss = loss + film.stability * (pred - pred2).abs().mean()
                else:
                    pred = model(x).float()
                    loss = (pred - y).abs().mean()
                if cfg.subpixel_loss > 0:
                    loss = loss + cfg.subpixel_loss * fixed_pattern_loss(pred, y, model.scale)
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
        "checkpoint": str(out / CHECKPOINT),
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
            "film_augment": json.dumps(asdict(film)) if film is not None else "none",
            "synth_key_nits": f"{cfg.synth_key_nits[0]:g}-{cfg.synth_key_nits[1]:g}",
        }
        save_weights(model.cpu(), str(weights), metadata=meta)
        result["weights"] = str(weights)
    return result
