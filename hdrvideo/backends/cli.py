"""CLI commands of the backends stage: ``export onnx``, ``engine build|list|clear``, ``bench``.

Attached to the main app by :func:`register` (called from ``hdrvideo.cli``). Failures raise
:class:`~hdrvideo.errors.HdrvideoError` subclasses: the app prints one line, no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from ..cli import Backend, X265Preset, checked
from ..errors import UsageError, WeightsMissingError

__all__ = ["register"]


def _out():
    from ..cli import stdout

    return stdout


def _neural_preset(name: str, max_height: int | None = None):
    from ..presets import load_preset

    p = load_preset(name)
    if p.processor == "auto":
        if max_height is None:
            raise UsageError(f"preset {p.name!r} picks a network by input height; name a concrete preset "
                             f"({', '.join(n for _, n in p.auto)})")
        p = p.resolve(max_height)
    if p.processor != "neural" or p.model is None:
        raise UsageError(f"preset {p.name!r} has no network ({p.processor}); nothing to export")
    return p


def _load(p, weights: Optional[Path]):
    from ..models import WeightsError, load_model
    from ..presets import find_weights

    path = weights or find_weights(p)
    if path is None:
        raise WeightsMissingError(f"preset {p.name!r} needs weights ({p.model.weights or p.model.arch}) that are "
                                  "not installed; pass --weights PATH")
    try:
        return load_model(p.model.arch, str(path), colour_domain=p.model.colour_domain)
    except (WeightsError, FileNotFoundError) as err:
        raise UsageError(str(err).splitlines()[0]) from None


def _size(text: Optional[str]) -> tuple[int, int] | None:
    if text is None:
        return None
    from ..bench import parse_size

    return parse_size(text)


def export_onnx_command(
    preset: Annotated[str, typer.Option("-p", "--preset", help="Neural preset (or .toml) whose network to export.")],
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Weights overriding the preset's.")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output .onnx (default: ARCH[-fp16].onnx).")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Convert to FP16, keeping reductions/statistics in FP32.")] = False,
    graph: Annotated[str, typer.Option("--graph", help="full (x→y), context (x→statistics) or tile (x, statistics→y).")] = "full",
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (≥ 17).")] = 17,
    force: Annotated[bool, typer.Option("-f", "--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Export a preset's network as one self-contained ONNX file (dynamic batch/height/width)."""
    from .onnx_export import GRAPH_KINDS, export_onnx

    if graph not in GRAPH_KINDS:
        raise UsageError(f"--graph must be one of {', '.join(GRAPH_KINDS)}")
    if opset < 17:
        raise UsageError("--opset must be ≥ 17")
    p = _neural_preset(preset)
    model = _load(p, weights)
    if output is None:
        output = Path(f"{p.model.arch}{'' if graph == 'full' else '-' + graph}{'-fp16' if fp16 else ''}.onnx")
    if output.suffix.lower() != ".onnx":
        raise UsageError("--output must end in .onnx")
    if output.exists() and not force:
        raise UsageError(f"{output} exists (use --force to overwrite)")
    path = export_onnx(model, output, kind=graph, opset=opset, fp16=fp16)
    _out().print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opset {opset}, "
                 f"{'FP16 with FP32 statistics' if fp16 else 'FP32'}, {graph} graph)", highlight=False)


def engine_build_command(
    preset: Annotated[str, typer.Option("-p", "--preset", help="Neural preset whose network to build.")],
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Weights overriding the preset's.")] = None,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Largest batch (default: the preset's).")] = None,
    max_size: Annotated[Optional[str], typer.Option("--max-size", help="Largest input WxH (default: preset target ÷ scale).")] = None,
    device: Annotated[str, typer.Option("--device", help="cuda or cuda:N.")] = "cuda",
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build even if a cached engine exists.")] = False,
    workspace: Annotated[int, typer.Option("--workspace", help="Builder workspace limit in MiB.")] = 4096,
) -> None:
    """Build (and cache) a TensorRT FP16 engine covering a preset's input sizes."""
    from .tensorrt_backend import BuilderOptions, TensorRTBackend, load_tensorrt, preset_profile, require_cuda

    load_tensorrt()  # one line naming what is missing, before any work
    require_cuda(device)
    p = _neural_preset(preset, max_height=None)
    b = int(batch or p.batch)
    if b < 1:
        raise UsageError("--batch must be ≥ 1")
    model = _load(p, weights)
    be = TensorRTBackend(model, device, batch=b, max_size=_size(max_size), rebuild=rebuild,
                         options=BuilderOptions(workspace_mib=workspace))
    mgr = be.manager("full")
    profile = preset_profile(mgr.inputs, b, p.target, p.scale, _size(max_size))
    path = be.build_for(profile)
    _out().print(f"engine ready: {path}", highlight=False)


def engine_list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List cached TensorRT engines and exported ONNX graphs."""
    from .engine_cache import EngineCache

    cache = EngineCache()
    entries = cache.entries()
    if as_json:
        _out().print_json(json.dumps({"cache": str(cache.root), "entries": [
            {"path": str(e.path), "size": e.size, **e.meta} for e in entries]}, default=str))
        return
    out = _out()
    out.print(f"cache: {cache.root}", highlight=False)
    if not entries:
        out.print("  (empty)", highlight=False)
    for e in entries:
        key = e.meta.get("key", {})
        if e.kind == "engine":
            prof = key.get("profile", {}).get("x", {})
            what = (f"TensorRT {key.get('tensorrt', '?')} on {key.get('gpu', '?')} (sm {key.get('compute_capability', '?')}), "
                    f"x max {prof.get('max')}")
        else:
            what = f"ONNX {key.get('graph', '?')} graph, opset {key.get('opset', '?')}{', FP16' if key.get('fp16') else ''}"
        out.print(f"  {e.path.name}  {e.size / 1e6:.1f} MB  {what}", highlight=False, soft_wrap=True)


def engine_clear_command(
    all_: Annotated[bool, typer.Option("--all", help="Also remove cached exported ONNX graphs.")] = False,
) -> None:
    """Remove cached TensorRT engines and timing caches (and ONNX graphs with --all)."""
    from .engine_cache import EngineCache

    cache = EngineCache()
    n = cache.clear(engines=True, timing=True, onnx=all_)
    _out().print(f"removed {n} cached file(s) from {cache.root}", highlight=False)


def bench_command(
    preset: Annotated[Optional[str], typer.Option("-p", "--preset", help="Preset to benchmark (default: sr4-itm; bt2408 with --compare-ffmpeg).")] = None,
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Weights overriding the preset's.")] = None,
    backend: Annotated[Backend, typer.Option("--backend", help="Inference backend.")] = Backend("auto"),  # type: ignore[assignment]
    device: Annotated[Optional[str], typer.Option("--device", help="cpu or cuda[:N].")] = None,
    size: Annotated[Optional[str], typer.Option("--size", help="Synthetic input WxH (default: 240x136; 640x360 with --compare-ffmpeg).")] = None,
    frames: Annotated[Optional[int], typer.Option("--frames", help="Frames to time (default: 48; 500 with --compare-ffmpeg).")] = None,
    input: Annotated[Optional[Path], typer.Option("--input", help="Time this video instead of synthetic input.")] = None,
    random_weights: Annotated[bool, typer.Option("--random-weights", help="Time a randomly initialised network (bench only; never used for conversion).")] = False,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Frames per batch (default: the preset's).", callback=checked("batch"))] = None,
    x265_preset: Annotated[Optional[X265Preset], typer.Option("--x265-preset", help="x265 speed preset (default: the preset's).")] = None,  # type: ignore[valid-type]
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU cores to budget (default: all).")] = None,
    all_backends: Annotated[bool, typer.Option("--all-backends", help="Also time the model on every other backend available here.")] = False,
    precision: Annotated[str, typer.Option("--precision", help="auto (FP16 on CUDA, FP32 on CPU), fp16 or fp32.")] = "auto",
    cuda_graphs: Annotated[Optional[bool], typer.Option("--cuda-graphs/--no-cuda-graphs", help="torch on CUDA: replay the model as CUDA graphs (default on).")] = None,
    torch_compile: Annotated[Optional[str], typer.Option("--torch-compile", help="torch: torch.compile mode (default, max-autotune-no-cudagraphs, …); off by default.")] = None,
    compare_ffmpeg: Annotated[bool, typer.Option("--compare-ffmpeg", help="Time `hdrvideo convert` (bt2408) against FFmpeg's zscale chain into the same libx265 settings (needs the bench extra: imageio-ffmpeg).")] = False,
    runs: Annotated[int, typer.Option("--runs", help="Alternating timed runs of each side for --compare-ffmpeg.")] = 3,
    crf: Annotated[float, typer.Option("--crf", help="x265 CRF for --compare-ffmpeg.", callback=checked("crf"))] = 20.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Measure decode, model, colour/pack, encode and end-to-end fps, and the pipeline's efficiency."""
    from ..bench import parse_size, run_bench

    backend, x265_preset = backend.value, x265_preset.value if x265_preset else None
    if compare_ffmpeg:
        return _compare_ffmpeg(preset or "bt2408", parse_size(size or "640x360"), frames or 500,
                               str(input) if input else None, runs, x265_preset or "fast", crf, as_json)
    preset, size, frames = preset or "sr4-itm", size or "240x136", frames or 48
    torch_options: dict[str, Any] = {}
    if cuda_graphs is not None:
        torch_options["cuda_graphs"] = cuda_graphs
    if torch_compile:
        torch_options["compile"] = torch_compile
    r = run_bench(preset, str(weights) if weights else None, backend, device, parse_size(size), frames,
                  str(input) if input else None, random_weights, batch, x265_preset, threads,
                  all_backends=all_backends, precision=precision, backend_options=torch_options)
    if as_json:
        _out().print_json(json.dumps(r.to_dict()))
        return
    out = _out()
    w, h = r.input_size
    ow, oh = r.output_size
    out.print(f"{r.preset} ({r.arch}) on {r.backend}/{r.device}: {r.frames} frames {w}×{h} → {ow}×{oh}, batch {r.batch}, "
              f"threads {r.threads}", highlight=False)
    out.print(f"  weights: {r.weights}; input: {r.input}; {r.processor}", highlight=False, soft_wrap=True)
    for k in ("decode", "model", "colour_pack", "process", "encode", "measure", "end_to_end", "steady_state"):
        mark = "  ← slowest stage" if k == r.slowest_stage else ""
        label = {"process": "process (model + colour/pack)", "colour_pack": "colour/pack",
                 "end_to_end": "end-to-end (whole run)", "steady_state": "end-to-end (steady state)",
                 "measure": "measure (light meter)"}.get(k, k)
        out.print(f"  {label:<30} {r.fps[k]:9.2f} fps{mark}", highlight=False)
    if len(r.model_fps_by_backend) > 1:
        out.print("  model by backend: " + ", ".join(f"{k} {v:.2f} fps" for k, v in r.model_fps_by_backend.items()),
                  highlight=False)
    out.print(f"  pipeline efficiency {r.efficiency:.2f} (steady state ÷ slowest stage; whole run "
              f"{r.efficiency_whole_run:.2f}, vs slowest part {r.efficiency_vs_slowest_part:.2f}); "
              f"setup {r.setup_s:.2f} s; peak RSS {r.peak_rss_mb:.0f} MB", highlight=False, soft_wrap=True)
    if r.peak_gpu_mb:
        out.print(f"  GPU {r.gpu}: peak torch memory {r.peak_gpu_mb.get('end_to_end', 0):.0f} MiB end to end, "
                  f"{r.peak_gpu_mb.get('model_batch', 0):.0f} MiB for one model batch", highlight=False)
    for n in r.notes:
        out.print(f"  note: {n}", highlight=False)


def _compare_ffmpeg(preset: str, size: tuple[int, int], frames: int, input: str | None, runs: int, x265_preset: str,
                    crf: float, as_json: bool) -> None:
    import sys

    from ..bench import compare_ffmpeg

    r = compare_ffmpeg(input, size, frames, runs, x265_preset, crf, preset)
    if isinstance(r, str):  # cannot run here: one line, not an error
        if as_json:
            _out().print_json(json.dumps({"skipped": r}))
        print(f"note: --compare-ffmpeg skipped: {r}", file=sys.stderr)
        return
    if as_json:
        _out().print_json(json.dumps(r.to_dict()))
        return
    out = _out()
    w, h = r.input_size
    runs_h = ", ".join(f"{v:.2f}" for v in r.hdrvideo_wall_s)
    runs_f = ", ".join(f"{v:.2f}" for v in r.ffmpeg_wall_s)
    out.print(f"hdrvideo vs FFmpeg: {r.frames} frames {w}×{h} ({r.input}), x265 {r.x265_preset} CRF {r.crf:g}, audio "
              f"copied, {r.runs} alternating runs each", highlight=False, soft_wrap=True)
    out.print(f"  hdrvideo convert --preset {r.preset}  median {r.median_hdrvideo_s:.2f} s wall ({runs_h}), "
              f"CPU {sorted(r.hdrvideo_cpu_s)[(r.runs - 1) // 2]:.2f} s; without start-up "
              f"{sorted(r.hdrvideo_pipeline_s)[(r.runs - 1) // 2]:.2f} s", highlight=False, soft_wrap=True)
    out.print(f"  FFmpeg zscale → libx265        median {r.median_ffmpeg_s:.2f} s wall ({runs_f}), "
              f"CPU {sorted(r.ffmpeg_cpu_s)[(r.runs - 1) // 2]:.2f} s", highlight=False, soft_wrap=True)
    out.print(f"  speed ratio (FFmpeg ÷ hdrvideo wall) {r.speed_ratio:.2f} (pairs "
              f"{', '.join(f'{v:.2f}' for v in r.pair_ratios)}); CPU ratio {r.cpu_ratio:.2f}", highlight=False)
    out.print(f"  hdrvideo MaxCLL {r.max_cll}, MaxFALL {r.max_fall} (measured on the decoded output); stages "
              f"{r.stage_seconds}", highlight=False, soft_wrap=True)
    out.print(f"  FFmpeg: {r.ffmpeg}", highlight=False, soft_wrap=True)
    for n in r.notes:
        out.print(f"  note: {n}", highlight=False)


def register(app: typer.Typer, handle_errors: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    export_app = typer.Typer(help="Export networks (ONNX).", no_args_is_help=True)
    export_app.command("onnx")(handle_errors(export_onnx_command))
    app.add_typer(export_app, name="export")

    engine_app = typer.Typer(help="TensorRT engines: build, list, clear the cache.", no_args_is_help=True)
    engine_app.command("build")(handle_errors(engine_build_command))
    engine_app.command("list")(handle_errors(engine_list_command))
    engine_app.command("clear")(handle_errors(engine_clear_command))
    app.add_typer(engine_app, name="engine")

    app.command("bench")(handle_errors(bench_command))


