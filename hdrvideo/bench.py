"""``hdrvideo bench``: how fast each stage and the whole pipeline run on this machine.

Measured, in one process and one run (so the ratios are comparable even on a noisy machine):

* **decode** — PyAV decode of the input into batch buffers (:class:`~hdrvideo.media.decode.Decoder`);
* **model** — the network on the chosen backend, warm (the first run, which builds engines or
  sessions and allocates, is excluded); with ``all_backends`` (``--all-backends``) also on every
  other backend that starts here (``model_fps_by_backend``; a backend that cannot start — TensorRT
  without a GPU — is a note, not a failure);
* **colour/pack** — Y'CbCr→R'G'B' on the device, then R'G'B'→Y'CbCr BT.2020 10-bit 4:2:0 and the
  copy of the packed planes to the host, with the fit and roll-off stages (:class:`~hdrvideo.stages.ProcessStage` without the model);
* **encode** — x265 (or NVENC) with the preset's settings, including the final flush;
* **measure** — the light meter decoding the encoded stream again for MaxCLL/MaxFALL (when the
  pipeline measures the decoded output, its default);
* **end-to-end** — the real :class:`~hdrvideo.pipeline.Pipeline` on the same input (run first, so
  the peak RSS reported is the pipeline's), two figures: *whole run* (frames ÷ wall time, its
  one-off setup — probe, model load, session/engine creation — and the final mux excluded and
  reported separately; pipeline fill and drain included) and *steady state* (the rate frames
  reach the encoder while every stage is running, from the pipeline's progress events: without
  the fill and the drain — the x265 lookahead flush and metering tail, a fixed latency of a few
  seconds that a real video amortises over thousands of frames).

The pipeline runs decode, process (= colour/pack + model, one thread) and encode (+ measure) in
overlapping threads, so its throughput is bounded by its slowest *thread*:
**efficiency = steady-state end-to-end fps ÷ the slowest pipeline stage's fps**, where the
process stage's fps is 1 / (1/model + 1/colour_pack). 1.0 means perfect overlap; stages that
ran in turn instead of together would give about 1/(number of stages). The whole-run ratio and
the ratio to the slowest single part (model, colour/pack, …) are reported too.

Every stage is measured with the same CPU thread budget the pipeline uses
(:func:`thread_budget`), so the comparison is fair.

Weights: ``--weights`` or the preset's installed file. ``--random-weights`` benchmarks a
randomly initialised network of the preset's architecture — labelled as such in the result, and
only ever inside ``bench`` (user-facing conversion never runs random weights).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import HdrvideoError, InputError, UsageError, WeightsMissingError

__all__ = ["BenchResult", "run_bench", "thread_budget", "parse_size", "FfmpegComparison", "compare_ffmpeg",
           "find_bench_ffmpeg"]

log = logging.getLogger(__name__)


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise UsageError(f"size must be WIDTHxHEIGHT, got {text!r}") from None
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise UsageError(f"size must be even and at least 16x16, got {text!r}")
    return w, h


def thread_budget(device: str | torch.device, cores: int | None = None) -> dict[str, int]:
    """CPU threads per stage so the stages overlap instead of fighting for the cores.

    On CPU the model is by far the heaviest stage, but giving it every core makes it fight
    x265, the decoder and the light meter, which run at the same time in their own threads:
    measured on the 2-core machine, a 2-thread model stage gained nothing over 1 thread while
    the other stages lost up to 3× (torch's elementwise colour maths over-threaded on busy cores
    is slower than single-threaded). So the model (ORT intra-op pool, or torch's for the torch
    backend) and the colour/pack maths in the same thread get ``cores - 1`` threads, and one core
    is left for decode, encode and metering. On a GPU the model needs no CPU threads.
    """
    cores = cores or os.cpu_count() or 1
    dev = torch.device(device)
    if dev.type == "cuda":
        return {"cores": cores, "model": 1, "torch": min(cores, 4)}
    work = max(1, cores - 1)
    return {"cores": cores, "model": work, "torch": work}


@dataclass
class BenchResult:
    preset: str
    arch: str | None
    backend: str
    device: str
    weights: str  # a path, or "random (bench only)"
    input: str  # "synthetic" or a path
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    frames: int
    batch: int
    threads: dict[str, int]
    fps: dict[str, float]  # decode, model, colour_pack, process, encode, measure, end_to_end, steady_state
    slowest_stage: str
    efficiency: float  # steady-state end-to-end ÷ slowest pipeline stage
    efficiency_whole_run: float  # whole-run end-to-end (fill and drain included) ÷ slowest pipeline stage
    efficiency_vs_slowest_part: float  # steady state ÷ min(decode, model, colour_pack, encode, measure)
    setup_s: float
    peak_rss_mb: float  # of the process at the end of the end-to-end run (the pipeline's peak)
    processor: str = ""
    model_fps_by_backend: dict[str, float] = field(default_factory=dict)  # warm; others only with all_backends
    notes: list[str] = field(default_factory=list)
    precision: str = "auto"  # auto | fp16 | fp32, as asked
    gpu: str = ""  # the CUDA device's name
    #: peak torch CUDA memory (torch.cuda.max_memory_allocated, MiB) of the end-to-end run and of
    #: one warm model batch; TensorRT's and cuDNN's own workspaces are not in it
    peak_gpu_mb: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fps(frames: int, seconds: float) -> float:
    return round(frames / seconds, 3) if seconds > 0 else float("inf")


def run_bench(
    preset: str = "sr4-itm",
    weights: str | None = None,
    backend: str = "auto",
    device: str | None = None,
    size: tuple[int, int] = (240, 136),
    frames: int = 48,
    input: str | None = None,
    random_weights: bool = False,
    batch: int | None = None,
    x265_preset: str | None = None,
    threads: int | None = None,
    workdir: str | None = None,
    all_backends: bool = False,
    precision: str = "auto",
    backend_options: dict[str, Any] | None = None,
) -> BenchResult:
    """Measure the stages and the whole pipeline; see the module docstring.

    ``precision``: ``auto`` (each backend's default: FP16 on CUDA, FP32 on a CPU), ``fp16`` or
    ``fp32``. ``backend_options`` go to the backend (e.g. ``{"cuda_graphs": False}`` or
    ``{"compile": "default"}`` for torch).
    """
    from . import models
    from .media.decode import Decoder
    from .media.encode import EncoderConfig, HevcEncoder
    from .media.probe import probe, require_sdr_video
    from .media.sample import write_clip
    from .pipeline import ConvertOptions, LightMeter, Pipeline
    from .stages import HDR, Deband, Frames, ProcessorStage, ProcessStage, SceneCuts, build_chain
    from .presets import find_weights, load_preset, output_size
    from .processors import build_processor

    if frames < 2:
        raise UsageError("--frames must be at least 2")
    if precision not in ("auto", "fp16", "fp32"):
        raise UsageError(f"precision must be auto, fp16 or fp32, not {precision!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    budget = thread_budget(device, threads)
    torch_threads_before = torch.get_num_threads()
    torch.set_num_threads(budget["torch"])
    notes: list[str] = []
    tmp = tempfile.TemporaryDirectory(prefix="hdrvideo-bench-", dir=workdir)
    try:
        work = Path(tmp.name)
        # ---- input ----------------------------------------------------------------------
        if input is None:
            clip = work / "synthetic.mp4"
            write_clip(str(clip), width=size[0], height=size[1], seconds=frames / 24, fps=24, audio=False)
            source = "synthetic"
        else:
            clip = Path(input)
            if not clip.is_file():
                raise InputError(f"input not found: {input}")
            source = str(clip)
        video = require_sdr_video(probe(str(clip)))
        p = load_preset(preset).resolve(video.height)
        if batch is not None:
            p = p.replace(batch=int(batch))
        if x265_preset is not None:
            p = p.replace(encode=p.encode.__class__(encoder=p.encode.encoder, crf=p.encode.crf,
                                                    x265_preset=x265_preset, chroma_siting=p.encode.chroma_siting))
        out_w, out_h = output_size(video.width, video.height, p.scale, p.target)

        # ---- weights ----------------------------------------------------------------------
        label = "none (classical)"
        if p.processor == "neural":
            path = weights or (None if random_weights else find_weights(p))
            if path is None and random_weights:
                torch.manual_seed(0)
                model = models.create(p.model.arch, colour_domain=p.model.colour_domain)
                path = str(models.save_weights(model, work / f"random-{p.model.arch}.safetensors"))
                label = "random (bench only)"
                notes.append("random weights: speed only, the output is meaningless")
            elif path is None:
                raise WeightsMissingError(
                    f"preset {p.name!r} needs weights that are not installed; pass --weights PATH, "
                    "or --random-weights to time a randomly initialised network (bench only)")
            else:
                label = str(path)
            weights = str(path)

        extra = dict(backend_options or {})
        backend_options = {"threads": budget["model"]} if backend in ("auto", "onnxruntime") else {}
        if precision != "auto":
            backend_options["fp16"] = precision == "fp16"
        backend_options.update(extra)
        processor = build_processor(p, device=device, weights=weights, backend=backend,
                                    input_size=(video.width, video.height), **backend_options)
        dev = processor.device
        gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else ""
        peak_gpu: dict[str, float] = {}
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)

        # ---- end to end (first, so the peak RSS below is the pipeline's own) ------------------
        out = work / "e2e.mp4"
        progress: list[tuple[float, int]] = []

        def on_progress(ev) -> None:
            if ev.stage == "convert" and (not progress or ev.frame != progress[-1][1]):
                progress.append((time.perf_counter(), ev.frame))

        opts = ConvertOptions(preset=p, weights=weights, backend=backend, device=device, force=True,
                              copy_audio=False, copy_subtitles=False, progress=on_progress,
                              backend_options=backend_options)  # the same thread budget as the stage timings
        report = Pipeline(str(clip), str(out), opts).run()
        rss_pipeline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if dev.type == "cuda":
            peak_gpu["end_to_end"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
        setup = float(report.stage_seconds.get("setup", 0.0))
        whole = report.seconds - setup - float(report.stage_seconds.get("mux", 0.0))
        e2e = _fps(report.frames, whole)
        # steady state: frames handed to the encoder per second while all stages run, i.e.
        # without the pipeline fill (first decode) and drain (x265 lookahead flush, metering
        # tail), fixed per-run latencies that a real video amortises over thousands of frames
        moving = [(t, n) for t, n in progress if 0 < n]
        if len(moving) >= 2 and moving[-1][1] > moving[0][1]:
            steady = round((moving[-1][1] - moving[0][1]) / (moving[-1][0] - moving[0][0]), 3)
        else:
            steady = e2e
            notes.append("too few progress samples for a steady-state figure; using the whole run")

        # ---- decode -----------------------------------------------------------------------
        dec = Decoder(str(clip), video, batch=p.batch, pin_memory=dev.type == "cuda", buffers=4)
        batches = []
        t0 = time.perf_counter()
        n_dec = 0
        for b in dec:
            batches.append(([t.clone() for t in b.planes], list(b.pts)))
            n_dec += b.size
            if b.release:
                b.release()
        t_decode = time.perf_counter() - t0
        if n_dec == 0:
            raise InputError(f"no frames decoded from {clip}")
        frames = n_dec
        if report.frames != frames:
            notes.append(f"pipeline converted {report.frames} frames, stages timed {frames}")

        # ---- model (warm) -----------------------------------------------------------------
        # the chain after the processor (fit into the output size, peak roll-off) counts as colour/pack
        post = [s for s in build_chain(processor, (out_w, out_h), p.mastering.max_luminance)
                if not isinstance(s, (ProcessorStage, SceneCuts, Deband))]
        stage = ProcessStage(post, dec.layout, video, dev, p.encode.chroma_siting, measure=False,
                             luma_adjust=p.encode.luma_adjust)  # packed as convert packs

        def pack(hdr):
            return stage.pack(stage.run_chain(Frames(hdr, [], HDR)).rgb)

        rgbs = [stage.to_rgb(planes) for planes, _ in batches]
        with torch.inference_mode():
            processor(rgbs[0])  # warm-up: session/engine creation, allocations
            processor(rgbs[0])  # a second call: CUDA graphs capture a shape on its second call
            _sync(dev)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
                base = torch.cuda.memory_allocated(dev)
                processor(rgbs[0])
                _sync(dev)
                peak_gpu["model_batch"] = round((torch.cuda.max_memory_allocated(dev) - base) / 2**20, 1)
            t0 = time.perf_counter()
            hdrs = [processor(rgb) for rgb in rgbs]
            _sync(dev)
        t_model = time.perf_counter() - t0
        chosen = getattr(getattr(processor, "backend", None), "name", backend)
        by_backend = {chosen: _fps(frames, t_model)}
        if all_backends and p.processor == "neural":
            by_backend.update(_other_backends(p, weights, dev, chosen, rgbs[: min(len(rgbs), 4)], budget, notes))

        # ---- colour / pack ----------------------------------------------------------------
        packed = []
        with torch.inference_mode():
            stage.to_host(*pack(hdrs[0]))  # warm-up (kernel and allocator first calls)
            _sync(dev)
            t0 = time.perf_counter()
            for (planes, _), hdr in zip(batches, hdrs):
                stage.to_rgb(planes)
                y, cb, cr = pack(hdr)
                packed.append(tuple(stage.to_host(y, cb, cr)))
            _sync(dev)
        t_colour = time.perf_counter() - t0
        del hdrs, rgbs

        # ---- encode -----------------------------------------------------------------------
        from .media.hdr10_boxes import MasteringMetadata

        mastering = MasteringMetadata(p.mastering.primaries, p.mastering.max_luminance, p.mastering.min_luminance)
        enc_path = work / "encode.mp4"
        packets: list[Any] = []
        enc = HevcEncoder(str(enc_path), EncoderConfig(
            width=out_w, height=out_h, time_base=video.time_base, rate=video.rate, encoder=p.encode.encoder,
            crf=p.encode.crf, x265_preset=p.encode.x265_preset, chroma_siting=p.encode.chroma_siting,
            mastering=mastering), packet_sink=lambda pk: packets.append((bytes(pk), pk.pts, pk.dts)))
        t0 = time.perf_counter()
        k = 0
        for (y, cb, cr), (_, pts) in zip(packed, batches):
            for i in range(len(pts)):
                enc.encode(y[i], cb[i], cr[i], k)
                k += 1
        enc.close()
        t_encode = time.perf_counter() - t0
        extradata = enc.extradata

        # ---- light meter ------------------------------------------------------------------
        meter = LightMeter(dev, p.encode.chroma_siting)
        if extradata:
            meter.decoder.extradata = extradata
        t0 = time.perf_counter()
        for data, pts, dts in packets:
            meter.feed(LightMeter.packet(data, pts, dts))
        meter.feed(None)
        t_measure = time.perf_counter() - t0
        del packed, batches

        fps = {
            "decode": _fps(frames, t_decode),
            "model": _fps(frames, t_model),
            "colour_pack": _fps(frames, t_colour),
            "process": _fps(frames, t_model + t_colour),
            "encode": _fps(frames, t_encode),
            "measure": _fps(frames, t_measure),
            "end_to_end": e2e,
            "steady_state": steady,
        }
        pipeline_stages = {k: fps[k] for k in ("decode", "process", "encode", "measure")}
        slowest = min(pipeline_stages, key=pipeline_stages.get)
        parts = min(fps[k] for k in ("decode", "model", "colour_pack", "encode", "measure"))
        return BenchResult(
            preset=p.name, arch=p.model.arch if p.model else None, backend=getattr(getattr(processor, "backend", None), "name", backend),
            device=str(dev), weights=label, input=source, input_size=(video.width, video.height),
            output_size=(out_w, out_h), frames=frames, batch=p.batch, threads=budget, fps=fps,
            slowest_stage=slowest, efficiency=round(steady / pipeline_stages[slowest], 3),
            efficiency_whole_run=round(e2e / pipeline_stages[slowest], 3),
            efficiency_vs_slowest_part=round(steady / parts, 3), setup_s=round(setup, 3),
            peak_rss_mb=round(rss_pipeline, 1),
            processor=processor.description, model_fps_by_backend=by_backend, notes=notes,
            precision=precision, gpu=gpu, peak_gpu_mb=peak_gpu,
        )
    finally:
        tmp.cleanup()
        torch.set_num_threads(torch_threads_before)


def _other_backends(p, weights, dev, chosen, rgbs, budget, notes) -> dict[str, float]:
    """Warm model fps of every other backend that starts on this device (a few batches each)."""
    from .errors import HdrvideoError
    from .processors import build_processor

    out: dict[str, float] = {}
    for name in ("tensorrt", "onnxruntime", "torch"):
        if name == chosen:
            continue
        opts = {"threads": budget["model"]} if name == "onnxruntime" else {}
        try:
            proc = build_processor(p, device=str(dev), weights=weights, backend=name, **opts)
            with torch.inference_mode():
                proc(rgbs[0])
                _sync(dev)
                t0 = time.perf_counter()
                for rgb in rgbs:
                    proc(rgb)
                _sync(dev)
            out[name] = _fps(sum(r.shape[0] for r in rgbs), time.perf_counter() - t0)
        except HdrvideoError as err:
            notes.append(f"{name}: not available here ({err})")
    return out


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# --------------------------------------------------------------------------------------
# hdrvideo against FFmpeg on the same job (``hdrvideo bench --compare-ffmpeg``)
# --------------------------------------------------------------------------------------

#: hdrvideo's interpretation of the input → zimg's names (FFmpeg ``zscale`` options)
_ZIMG_MATRIX = {"bt709": "709", "bt601": "470bg", "bt2020": "2020_ncl"}
_ZIMG_PRIMARIES = {"bt709": "709", "bt601-525": "170m", "bt601-625": "470bg", "bt2020": "2020"}
_ZIMG_CHROMA = {"left": "left", "center": "center", "topleft": "topleft", "top": "top",
                "bottomleft": "bottomleft", "bottom": "bottom"}


@dataclass
class FfmpegComparison:
    """Wall and CPU seconds of ``hdrvideo convert`` and FFmpeg doing the same conversion.

    ``speed_ratio`` is FFmpeg's median wall time ÷ hdrvideo's: ≥ 1 means hdrvideo is at least as
    fast. Each run is a fresh process (interpreter start-up and imports included, as a user sees
    it); ``hdrvideo_pipeline_s`` is hdrvideo's own report of the conversion without them.
    """

    input: str
    frames: int
    input_size: tuple[int, int]
    preset: str
    x265_preset: str
    crf: float
    runs: int
    ffmpeg: str  # the executable and its version line
    hdrvideo_wall_s: list[float]
    ffmpeg_wall_s: list[float]
    hdrvideo_cpu_s: list[float]  # user + system of the process and its threads
    ffmpeg_cpu_s: list[float]
    hdrvideo_pipeline_s: list[float]  # the conversion as hdrvideo's report times it (no start-up)
    median_hdrvideo_s: float
    median_ffmpeg_s: float
    speed_ratio: float  # median FFmpeg wall ÷ median hdrvideo wall
    pair_ratios: list[float]  # FFmpeg ÷ hdrvideo for each alternating pair
    cpu_ratio: float  # median FFmpeg CPU ÷ median hdrvideo CPU
    max_cll: int
    max_fall: int
    output_frames: dict[str, int]
    output_bytes: dict[str, int]
    commands: dict[str, list[str]]
    stage_seconds: dict[str, float] = field(default_factory=dict)  # hdrvideo's report of its median run
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_bench_ffmpeg() -> tuple[str | None, str]:
    """The FFmpeg that ``imageio-ffmpeg`` ships (the ``bench`` extra), or (None, why not).

    It must have the ``zscale`` filter (zimg) and libx265. hdrvideo itself never uses it.
    """
    import subprocess

    try:
        import imageio_ffmpeg
    except ImportError:
        return None, "imageio-ffmpeg is not installed (pip install 'hdrvideo[bench]')"
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
        filters = subprocess.run([exe, "-hide_banner", "-filters"], capture_output=True, text=True, timeout=60).stdout
        encoders = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        return None, f"imageio-ffmpeg's FFmpeg does not run here ({err})"
    if " zscale " not in filters or " libx265 " not in encoders:
        return None, f"{exe} lacks the zscale filter or libx265"
    return exe, ""


def ffmpeg_bt2408_command(ffmpeg: str, src: str, dst: str, video, sdr_white: float, x265_options: dict[str, str],
                          siting: str = "left") -> list[str]:
    """FFmpeg's version of the ``bt2408`` conversion: zimg's BT.1886 linearisation with SDR white
    at ``sdr_white`` cd/m² (``npl``), BT.2020 primaries, ST 2084, 10-bit limited 4:2:0, then
    libx265 with ``x265_options`` (hdrvideo's own: preset, CRF, x265-params), the audio copied,
    an ``hvc1`` MP4 with ``moov`` first."""
    zin = (f"zscale=transferin=709:matrixin={_ZIMG_MATRIX.get(video.matrix, '709')}"
           f":primariesin={_ZIMG_PRIMARIES.get(video.primaries, '709')}"
           f":rangein={'full' if video.full_range else 'limited'}:chromalin={_ZIMG_CHROMA.get(video.chroma_siting, 'left')}"
           f":transfer=linear:npl={sdr_white:g}")
    zout = (f"zscale=primaries=2020:transfer=smpte2084:matrix=2020_ncl:range=limited"
            f":chromal={_ZIMG_CHROMA.get(siting, 'left')}:npl={sdr_white:g}")
    return [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", src,
            "-map", "0:v:0", "-map", "0:a?", "-vf", f"{zin},format=gbrpf32le,{zout},format=yuv420p10le",
            "-c:v", "libx265", *[a for k, v in x265_options.items() for a in (f"-{k}", v)],
            "-tag:v", "hvc1", "-c:a", "copy", "-movflags", "+faststart", dst]


def compare_ffmpeg(
    input: str | None = None,
    size: tuple[int, int] = (640, 360),
    frames: int = 500,
    runs: int = 3,
    x265_preset: str = "fast",
    crf: float = 20.0,
    preset: str = "bt2408",
    warmup: bool = True,
    workdir: str | None = None,
) -> FfmpegComparison | str:
    """Time ``hdrvideo convert`` against FFmpeg's zscale chain on the same input and x265 settings.

    Both run as fresh processes, in alternating order (ABBA…, after one untimed warm-up run of
    each), so that a busy machine slows both alike; wall times, CPU times and their medians are
    reported. Returns the reason as a string when the comparison cannot run here (no
    imageio-ffmpeg, or its FFmpeg lacks zscale/libx265).
    """
    import statistics
    import subprocess
    import sys

    from .media.encode import encoder_options
    from .media.probe import probe
    from .media.sample import make_sample
    from .pipeline import ConvertOptions, Pipeline
    from .presets import load_preset

    if runs < 1:
        raise UsageError("--runs must be at least 1")
    p = load_preset(preset)
    if p.processor != "bt2408" or p.scale != 1:
        raise UsageError(f"--compare-ffmpeg needs a classical bt2408 preset at scale 1 (FFmpeg's zscale chain "
                         f"is that mapping); {p.name!r} is {p.processor} ×{p.scale}")
    ffmpeg, why = find_bench_ffmpeg()
    if ffmpeg is None:
        return why
    version = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.splitlines()[:1]
    tmp = tempfile.TemporaryDirectory(prefix="hdrvideo-vs-ffmpeg-", dir=workdir)
    try:
        work = Path(tmp.name)
        if input is None:
            clip = str(work / "synthetic.mp4")
            make_sample(clip, size[0], size[1], seconds=frames / 24, fps=24)  # H.264 + AAC
            source = "synthetic"
        else:
            if not Path(input).is_file():
                raise InputError(f"input not found: {input}")
            clip, source = str(input), str(input)
        out_h, out_f = str(work / "hdrvideo.mp4"), str(work / "ffmpeg.mp4")
        # the encoder options exactly as `hdrvideo convert` will open libx265 with them
        pipe = Pipeline(clip, out_h, ConvertOptions(preset=preset, x265_preset=x265_preset, crf=crf, force=True))
        plan = pipe.plan()
        video = plan.video
        x265_options = encoder_options(pipe._encoder_config(plan))
        # the same job: the zscale chain has no dequantisation and no luma adjustment, so
        # hdrvideo's deband stage and luma adjustment are off
        cmd_h = [sys.executable, "-m", "hdrvideo.cli", "convert", clip, "-o", out_h, "--preset", preset,
                 "--x265-preset", x265_preset, "--crf", f"{crf:g}", "--deband", "off", "--no-luma-adjust",
                 "--force", "--progress", "none", "--json"]
        cmd_f = ffmpeg_bt2408_command(ffmpeg, clip, out_f, video, plan.preset.sdr_white, x265_options,
                                      plan.preset.encode.chroma_siting)

        def timed(cmd: list[str]) -> tuple[float, float, str]:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
                raise HdrvideoError(f"{'hdrvideo convert' if cmd[0] == sys.executable else 'FFmpeg'} failed: {tail}")
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            return wall, cpu, proc.stdout

        if warmup:
            timed(cmd_h)
            timed(cmd_f)
        walls: dict[str, list[float]] = {"h": [], "f": []}
        cpus: dict[str, list[float]] = {"h": [], "f": []}
        reports: list[dict[str, Any]] = []
        for i in range(runs):
            for side in (("h", "f") if i % 2 == 0 else ("f", "h")):
                wall, cpu, out = timed(cmd_h if side == "h" else cmd_f)
                walls[side].append(round(wall, 3))
                cpus[side].append(round(cpu, 3))
                if side == "h":
                    reports.append(json.loads(out))
        med_h, med_f = statistics.median(walls["h"]), statistics.median(walls["f"])
        median_run = sorted(range(runs), key=lambda k: walls["h"][k])[(runs - 1) // 2]
        frames_out, sizes = {}, {}
        for name, path in (("hdrvideo", out_h), ("ffmpeg", out_f)):
            v = probe(path).video
            frames_out[name] = v.frames if v is not None else 0
            sizes[name] = os.path.getsize(path)
        notes = []
        if frames_out["hdrvideo"] != frames_out["ffmpeg"]:
            notes.append(f"frame counts differ: {frames_out}")
        return FfmpegComparison(
            input=source, frames=reports[-1]["frames"], input_size=(video.width, video.height), preset=p.name,
            x265_preset=x265_preset, crf=float(crf), runs=runs, ffmpeg=f"{ffmpeg} ({' '.join(version)})",
            hdrvideo_wall_s=walls["h"], ffmpeg_wall_s=walls["f"], hdrvideo_cpu_s=cpus["h"], ffmpeg_cpu_s=cpus["f"],
            hdrvideo_pipeline_s=[r["seconds"] for r in reports], median_hdrvideo_s=round(med_h, 3),
            median_ffmpeg_s=round(med_f, 3), speed_ratio=round(med_f / med_h, 3),
            pair_ratios=[round(f / h, 3) for h, f in zip(walls["h"], walls["f"])],
            cpu_ratio=round(statistics.median(cpus["f"]) / statistics.median(cpus["h"]), 3),
            max_cll=reports[-1]["max_cll"], max_fall=reports[-1]["max_fall"], output_frames=frames_out,
            output_bytes=sizes, commands={"hdrvideo": ["hdrvideo", *cmd_h[3:]], "ffmpeg": cmd_f},
            stage_seconds=reports[median_run]["stage_seconds"], notes=notes,
        )
    finally:
        tmp.cleanup()
