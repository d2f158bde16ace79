"""Fine-tune the shipped networks on one CUDA GPU in minutes and bring the results back.

Run it through ``scripts/gpu-train.sh OUTDIR --photos DIR --teacher AGCM.pth`` (which puts carried
wheels on the path first). One deadline (``--budget``, 480 s by default) covers every step:

``data``      synthetic caches from the HDR photographs, in parallel shards on the CPU cores:
              broadcast targets at the standard exposure key (18–32 cd/m²) and the wide one (3–120),
              the standard held-out set; then the teacher's (AGCM's) grade of each shard for the
              real style (``hdrvideo relabel``). Shards differ only in their seeds.
``calibrate`` every run for a few steps, all at once on the GPU, to time a step.
``train``     every run at once, each for as many steps as fit the time left (cosine schedule to
              the end), fine-tuned from the shipped weights with the film augmentation.
``eval``      each new file and the shipped one on the held-out set (``hdrvideo eval``: the
              broadcast target, or the teacher's grade for the real style) and through the film
              test (``hdrvideo filmtest``), side by side.

Output (three files, as the device tool brings back): ``OUTDIR/summary.json`` (rewritten after
every step), ``OUTDIR/gpu-train.log`` and ``OUTDIR/weights.tar`` (each run's weights, log and
command). Nothing is copied into ``engines/``: shipping stays a decision made against the bars.
``--dry-run`` runs every step on the CPU at toy sizes (how the test suite checks the script).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENGINES = REPO / "engines"

#: film augmentation of every run (the shipped weights' last stage; see engines/weights.toml)
FILM = {"context_mismatch": 0.2, "fade": 0.3, "grain": 0.5, "grain_sigma": [1.0, 3.0], "stability": 0.5}


@dataclass(frozen=True)
class Run:
    """One fine-tuning run: a preset's style, its architecture, data and batch shape."""

    name: str
    preset: str
    style: str  # "" for a preset without styles
    arch: str
    init: str  # file in engines/ (the shipped weights of this style, or the broadcast ones); "" = from scratch
    batch: int
    patch: int  # input patch; the whole crop for ×1 (image-level statistics as at inference)
    lr: float
    film: dict = field(default_factory=lambda: dict(FILM))

    @property
    def real(self) -> bool:
        return self.style == "real"


RUNS = [
    Run("itm", "itm", "broadcast", "irnet-2", "irnet-2.safetensors", 16, 192, 1e-4),
    Run("sr2-itm", "sr2-itm", "broadcast", "irnet-5-x2", "irnet-5-x2.safetensors", 16, 96, 1e-4),
    Run("sr4-itm", "sr4-itm", "broadcast", "irnet-5-x4", "irnet-5-x4.safetensors", 32, 48, 1e-4),
    Run("itm-real", "itm", "real", "irnet-2", "irnet-2-real.safetensors", 16, 192, 5e-5),
    Run("sr2-itm-real", "sr2-itm", "real", "irnet-5-x2", "irnet-5-x2.safetensors", 16, 96, 2e-4),
    Run("sr4-itm-real", "sr4-itm", "real", "irnet-5-x4", "irnet-5-x4.safetensors", 32, 48, 2e-4),
    # opt-in (--runs …,sr4-itm-gpgm): GPGMNet ships no weights; trained from scratch
    Run("sr4-itm-gpgm", "sr4-itm-gpgm", "", "gpgmnet-x4", "", 32, 48, 5e-4),
]
DEFAULT_RUNS = [r.name for r in RUNS if r.init]

#: steps timed per run before training (the first ten are warm-up); seconds kept for evaluation
CALIBRATE_STEPS, EVAL_S = 20, 100


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def hdrvideo(*args: str) -> list[str]:
    return [sys.executable, "-m", "hdrvideo.cli", *args]


def run_cmd(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd``; past ``timeout`` it is killed and reported as return code -9."""
    log("$ " + shlex.join(cmd))
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, -9, "", f"timed out after {timeout:.0f} s")


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------


def _build_shard(photos: str, out: str, cfg: dict, teacher: str | None) -> tuple[str, float]:
    """Build one synthetic cache (and its teacher grade in ``out + '-real'``); in a child process."""
    import torch

    torch.set_num_threads(1)
    from hdrvideo.training.synthesis import SynthConfig, build_synthetic_set

    t0 = time.perf_counter()
    kw = dict(cfg)
    kw["key_nits"] = tuple(kw["key_nits"])
    build_synthetic_set(photos, out, SynthConfig(**kw))
    if teacher:
        from hdrvideo.models import load_model
        from hdrvideo.training.relabel import relabel_set

        relabel_set(out, out + "-real", load_model("agcm", teacher).eval(), "agcm")
    return out, time.perf_counter() - t0


def step_data(args, work: Path) -> dict:
    from hdrvideo.training.synthesis import standard_test_config

    tiny = args.dry_run
    size = 64 if tiny else 192
    views = 1 if tiny else args.views
    shards = 1 if tiny else max(1, min(args.shards, views))
    jobs = []
    for kind, keys, base in (("std", [18.0, 32.0], 100), ("wide", [3.0, 120.0], 200)):
        per = [views // shards + (1 if i < views % shards else 0) for i in range(shards)]
        for i, v in enumerate(per):
            cfg = dict(split="train", views_per_scene=v, height=size, width=size, variants=2, key_nits=keys,
                       seed=base + i)
            jobs.append((str(work / f"synth-{kind}-{i}"), cfg))
    test = standard_test_config()
    test_cfg = {k: getattr(test, k) for k in ("split", "views_per_scene", "height", "width", "variants", "seed",
                                              "balanced_methods", "key_nits")}
    if tiny:
        test_cfg.update(views_per_scene=1, height=64, width=64)
    jobs.append((str(work / "heldout"), test_cfg))
    t0 = time.perf_counter()
    workers = min(len(jobs), os.cpu_count() or 1)
    import multiprocessing as mp

    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futs = [pool.submit(_build_shard, args.photos, out, cfg, args.teacher) for out, cfg in jobs]
        times = [f.result() for f in futs]
    caches = {
        "broadcast": [out for out, _ in jobs if "synth-" in out],
        "real": [out + "-real" for out, _ in jobs if "synth-" in out],
        "heldout": str(work / "heldout"),
        "heldout-real": str(work / "heldout-real"),
    }
    return {"seconds": round(time.perf_counter() - t0, 1), "workers": workers, "views_per_scene": views,
            "shards": shards, "crop": size, "caches": caches,
            "per_shard_s": {Path(o).name: round(s, 1) for o, s in times}}


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------


def train_command(run: Run, caches: dict, out: Path, steps: int, device: str, args, seed: int) -> list[str]:
    data = ":".join(caches["real" if run.real else "broadcast"])
    from hdrvideo.models.registry import get_spec

    patch = min(run.patch, 64 // get_spec(run.arch).scale) if args.dry_run else run.patch  # toy crops: 64 px
    batch = 2 if args.dry_run else run.batch
    return hdrvideo(
        "train", "--arch", run.arch, "--data", data, "--out", str(out), "--steps", str(steps), "--batch", str(batch),
        "--patch", str(patch), "--lr", f"{run.lr:g}", "--cycles", "1", "--film",
        "--film-params", json.dumps(run.film, separators=(",", ":")), "--padding", "replicate",
        # SR networks: no fixed sub-pixel checkerboard (GPGMNet's ×4 upsampling left 4–20 codes on skies)
        *(["--subpixel-loss", "3"] if get_spec(run.arch).scale > 1 else []),
        *(["--init", str(args.inits.get(run.name) or ENGINES / run.init)] if run.init or run.name in args.inits else []),
        "--device", device, "--threads", str(args.threads), "--seed", str(seed),
        "--precision", "bf16",  # tensor cores; same held-out PSNR as fp32 in an A/B on the CPU
        "--quiet", "--checkpoint-every", str(max(50, steps)),
    )


def _log_lines(run_dir: Path) -> list[dict]:
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_all(runs: list[Run], cmds: dict[str, list[str]], timeout: float) -> dict[str, dict]:
    """Start every command at once; wait for all (each killed at ``timeout``)."""
    procs, logs, t0 = {}, {}, time.perf_counter()
    for r in runs:
        log("$ " + shlex.join(cmds[r.name]))
        logs[r.name] = open(cmds[r.name][cmds[r.name].index("--out") + 1] + ".log", "w")
        procs[r.name] = subprocess.Popen(cmds[r.name], stdout=logs[r.name], stderr=subprocess.STDOUT, text=True)
    results = {}
    for name, p in procs.items():
        left = timeout - (time.perf_counter() - t0)
        try:
            rc = p.wait(timeout=max(1.0, left))
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
        logs[name].close()
        results[name] = {"rc": rc, "seconds": round(time.perf_counter() - t0, 1)}
        if rc != 0:  # the end of its output, to read in summary.json
            results[name]["output_tail"] = Path(logs[name].name).read_text(errors="replace")[-1500:]
    return results


def step_calibrate(args, work: Path, runs: list[Run], caches: dict, device: str, budget_s: float) -> dict:
    steps = 2 if args.dry_run else CALIBRATE_STEPS
    cmds = {r.name: train_command(r, caches, work / f"cal-{r.name}", steps, device, args, seed=0) for r in runs}
    res = run_all(runs, cmds, budget_s)
    out = {}
    for r in runs:
        lines = _log_lines(work / f"cal-{r.name}")
        # seconds per step with every run sharing the GPU, after the first (warm-up) log line
        if len(lines) >= 2:
            per = (lines[-1]["elapsed"] - lines[0]["elapsed"]) / max(1, lines[-1]["step"] - lines[0]["step"])
        elif lines:
            per = lines[-1]["elapsed"] / max(1, lines[-1]["step"])
        else:
            per = None
        out[r.name] = {**res[r.name], "s_per_step": per}
    return out


def step_train(args, work: Path, runs: list[Run], caches: dict, device: str, seconds: float, cal: dict) -> dict:
    cmds, plan = {}, {}
    for r in runs:
        per = cal.get(r.name, {}).get("s_per_step")
        if not per:
            continue
        steps = 2 if args.dry_run else max(20, int(seconds * 0.85 / per))  # margin: a run past its time is lost
        plan[r.name] = steps
        cmds[r.name] = train_command(r, caches, work / r.name, steps, device, args, seed=args.seed)
    chosen = [r for r in runs if r.name in cmds]
    res = run_all(chosen, cmds, seconds + 30)
    out = {}
    for r in chosen:
        lines = _log_lines(work / r.name)
        weights = work / r.name / f"{r.arch}.safetensors"
        out[r.name] = {**res[r.name], "steps_planned": plan[r.name], "steps_done": lines[-1]["step"] if lines else 0,
                       "loss_ema_first": lines[0]["loss_ema"] if lines else None,
                       "loss_ema_last": lines[-1]["loss_ema"] if lines else None,
                       "weights": str(weights) if weights.is_file() else None,
                       "command": shlex.join(["hdrvideo", *cmds[r.name][3:]])}
    return out


# --------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------


def _json_out(proc: subprocess.CompletedProcess) -> dict:
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["(no message)"])[-1]}
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"error": "no JSON on stdout"}


def _evaluate(r: Run, weights: str | None, caches: dict, device: str, args) -> dict:
    data = caches["heldout-real" if r.real else "heldout"]
    style = ["--style", r.style] if r.style else []
    cmd = hdrvideo("eval", "--preset", r.preset, *style, "--data", data, "--device", device, "--json")
    if weights:
        cmd += ["--weights", weights]
    if r.real and args.teacher:
        cmd += ["--teacher", args.teacher]
    if args.dry_run:
        cmd += ["--limit", "2"]
    ev = _json_out(run_cmd(cmd, 300))
    size, frames = ("32x32", "4") if args.dry_run else ("96x56", "10")
    film_cmd = hdrvideo("filmtest", "--preset", r.preset, *style, "--size", size, "--frames", frames,
                        "--device", device, "--json")
    if weights:
        film_cmd += ["--weights", weights]
    film = _json_out(run_cmd(film_cmd, 300))
    m = ev.get("metrics", {})
    return {
        "eval": dict(m), "passes_bar": ev.get("passes_bar"), "eval_error": ev.get("error"),
        "film": dict(film.get("bars", {})), "film_error": film.get("error"),
        "film_passed": all(b.get("passed") for b in film.get("bars", {}).values()) if film.get("bars") else None,
    }


def step_eval(args, runs: list[Run], caches: dict, trained: dict, device: str) -> dict:
    jobs = {}
    with cf.ThreadPoolExecutor(max(1, min(8, (os.cpu_count() or 2) // 2))) as pool:
        for r in runs:
            new = trained.get(r.name, {}).get("weights")
            if new:
                jobs[(r.name, "new")] = pool.submit(_evaluate, r, new, caches, device, args)
            # what ships today for this preset and style (the real SR styles have none yet)
            shipped = ENGINES / r.init
            if r.init and r.real == ("real" in r.init):
                jobs[(r.name, "shipped")] = pool.submit(_evaluate, r, str(shipped), caches, device, args)
        out: dict = {}
        for (name, which), fut in jobs.items():
            out.setdefault(name, {})[which] = fut.result()
    return out


# --------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------


def environment(device: str) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
           "device": device}
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--photos", required=True, help="folder of the .hdr photographs (../shared/data/hdr-photos/polyhaven)")
    ap.add_argument("--teacher", help="AGCM weights for the real style (without it, broadcast runs only)")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for everything")
    ap.add_argument("--runs", default=",".join(DEFAULT_RUNS), help="comma-separated run names (sr4-itm-gpgm is opt-in)")
    ap.add_argument("--views", type=int, default=48, help="crops per training scene and exposure range")
    ap.add_argument("--shards", type=int, default=6, help="parallel cache shards per exposure range")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads per training process")
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument("--init", action="append", default=[], metavar="RUN=FILE",
                    help="start RUN from FILE instead of the shipped weights (e.g. a better CPU run); repeatable")
    ap.add_argument("--dry-run", action="store_true", help="every step on the CPU at toy sizes")
    args = ap.parse_args(argv)
    args.inits = {}
    for item in args.init:
        name, _, path = item.partition("=")
        if not path or not Path(path).is_file():
            print(f"gpu-train: --init {item!r}: expected RUN=FILE with an existing file", file=sys.stderr)
            return 2
        args.inits[name] = path

    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = [n for n in args.runs.split(",") if n]
    unknown = [n for n in wanted + list(args.inits) if n not in {r.name for r in RUNS}]
    if unknown:
        print(f"gpu-train: unknown runs {unknown}; known: {[r.name for r in RUNS]}", file=sys.stderr)
        return 2
    runs = [r for r in RUNS if r.name in wanted and (args.teacher or not r.real)]
    if not Path(args.photos).is_dir():
        print(f"gpu-train: --photos folder not found: {args.photos}", file=sys.stderr)
        return 2
    if args.teacher and not Path(args.teacher).is_file():
        print(f"gpu-train: --teacher file not found: {args.teacher}", file=sys.stderr)
        return 2
    device = "cpu" if args.dry_run else "cuda"
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="hdrvideo-gpu-train-"))
    summary: dict = {"budget_s": args.budget, "dry_run": args.dry_run, "environment": environment(device),
                     "runs": [r.name for r in runs], "film_params": FILM, "inits": args.inits}

    def save() -> None:
        summary["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        tmp = out / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1, default=str))
        tmp.replace(out / "summary.json")

    def left() -> float:
        return args.budget - (time.perf_counter() - t_start)

    log(f"gpu-train: {len(runs)} runs on {device}, budget {args.budget:.0f} s, work in {work}")
    try:
        return _run(args, runs, device, work, out, summary, save, left, t_start)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(args, runs, device, work, out, summary, save, left, t_start) -> int:
    data = step_data(args, work)
    summary["data"] = data
    save()
    log(f"data: {data['seconds']} s")
    cal = step_calibrate(args, work, runs, data["caches"], device, min(120.0, left()))
    summary["calibrate"] = cal
    save()
    train_s = left() - EVAL_S - 20 if not args.dry_run else 5.0
    if train_s < 30 and not args.dry_run:
        summary["error"] = f"only {train_s:.0f} s left for training"
        save()
        return 1
    log(f"train: {train_s:.0f} s per run, all at once")
    trained = step_train(args, work, runs, data["caches"], device, train_s, cal)
    summary["train"] = trained
    save()
    summary["eval"] = step_eval(args, runs, data["caches"], trained, device)
    save()
    with tarfile.open(out / "weights.tar", "w") as tar:
        for name, t in trained.items():
            run_dir = work / name
            for f in (f"{next(r.arch for r in runs if r.name == name)}.safetensors", "log.jsonl"):
                if (run_dir / f).is_file():
                    tar.add(run_dir / f, arcname=f"{name}/{f}")
    log(f"done in {time.perf_counter() - t_start:.0f} s: {out / 'summary.json'}, {out / 'weights.tar'}")
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
