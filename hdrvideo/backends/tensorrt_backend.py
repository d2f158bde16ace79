"""TensorRT backend: FP16 engines built from the exported ONNX, cached on disk.

One code path for TensorRT 10 and 11
------------------------------------
TensorRT 11 removed ``BuilderFlag.FP16`` and weak typing; 10.12+ deprecates them. So precision
lives in the graph: the ONNX is converted to FP16 by :mod:`.fp16` (reductions and statistics in
FP32), and the network is created with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (required
on 10.x for that meaning, accepted and ignored on 11.x where strong typing is always on).

Build (:class:`TrtToolkit.build`)
    ``trt.Builder`` → ``create_network(STRONGLY_TYPED)`` → ``OnnxParser.parse`` →
    ``create_builder_config`` with a workspace pool limit, ``builder_optimization_level`` and a
    timing cache (``create_timing_cache`` / ``set_timing_cache``, persisted per TRT version and
    GPU) → one ``IOptimizationProfile`` per execution context over batch and spatial size
    (``set_shape(min, opt, max)``, ``add_optimization_profile``) → ``build_serialized_network``.

Run (:class:`TrtRunner`)
    ``Runtime.deserialize_cuda_engine`` → two execution contexts, each with its own profile and
    its own non-default CUDA stream, used in turn, so one batch's copies overlap the other's
    compute. I/O are torch CUDA tensors: ``set_input_shape``, ``set_tensor_address(data_ptr)``,
    ``execute_async_v3(stream)``; no pycuda.

Engine cache (:mod:`.engine_cache`)
    The key holds the ONNX hash, the FP16-conversion settings, the TensorRT version, the GPU name
    and compute capability, the CUDA version, the profile shapes and the builder options. An
    engine that fails to deserialize is rebuilt with a warning.

Everything that needs no GPU (keys, profile choice, covering-engine lookup, the rebuild logic)
is plain Python, unit-tested with a fake toolkit; ``import tensorrt`` happens only in
:func:`load_tensorrt`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from ..errors import BackendError
from .base import tile_margin
from .engine_cache import EngineCache

__all__ = [
    "TensorRTBackend",
    "BuilderOptions",
    "Profile",
    "choose_profile",
    "engine_key",
    "load_tensorrt",
    "require_cuda",
    "TrtToolkit",
    "EngineManager",
    "preset_profile",
]

log = logging.getLogger(__name__)

MIN_SIDE = 32  # smallest spatial size a prebuilt (range) profile accepts


# --------------------------------------------------------------------------------------
# availability
# --------------------------------------------------------------------------------------


def load_tensorrt():
    """``import tensorrt`` or a one-line :class:`BackendError` saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendError("TensorRT is not installed (pip install tensorrt on a CUDA host; it needs an NVIDIA GPU)") from None
    except Exception as err:  # noqa: BLE001 - broken installs raise OSError for missing libs
        raise BackendError(f"TensorRT failed to load: {str(err).splitlines()[0]}") from None
    return trt


def require_cuda(device: str | torch.device | None = None) -> torch.device:
    """The CUDA device to use, or a one-line :class:`BackendError` when there is none."""
    dev = torch.device(device) if device is not None else torch.device("cuda")
    if dev.type != "cuda":
        raise BackendError(f"the tensorrt backend runs on a CUDA device, not {dev}")
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise BackendError(f"TensorRT needs an NVIDIA GPU: {why}")
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


# --------------------------------------------------------------------------------------
# profiles and keys (pure Python)
# --------------------------------------------------------------------------------------

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Profile:
    """min/opt/max shapes per input name."""

    shapes: tuple[tuple[str, Shape, Shape, Shape], ...]

    def as_dict(self) -> dict[str, dict[str, list[int]]]:
        return {name: {"min": list(mn), "opt": list(op), "max": list(mx)} for name, mn, op, mx in self.shapes}

    @classmethod
    def from_dict(cls, d: dict[str, dict[str, list[int]]]) -> "Profile":
        return cls(tuple((k, tuple(v["min"]), tuple(v["opt"]), tuple(v["max"])) for k, v in sorted(d.items())))

    def covers(self, shapes: dict[str, Shape]) -> bool:
        """True if every given input shape lies within [min, max] of this profile."""
        table = {name: (mn, mx) for name, mn, _, mx in self.shapes}
        for name, shape in shapes.items():
            if name not in table:
                return False
            mn, mx = table[name]
            if len(shape) != len(mn) or any(s < a or s > b for s, a, b in zip(shape, mn, mx)):
                return False
        return True

    def volume(self) -> int:
        """Size of the max shapes (smaller = tighter = preferred among covering engines)."""
        total = 0
        for _, _, _, mx in self.shapes:
            v = 1
            for d in mx:
                v *= int(d)
            total += v
        return total


def _dims(spec: list[Any], batch: int, h: int, w: int) -> Shape:
    """Resolve one ONNX input's dims: 'n' → batch, 'h'/'w' → spatial, ints stay."""
    out = []
    for i, d in enumerate(spec):
        if isinstance(d, int) and d > 0:
            out.append(d)
        elif d in ("n", "batch") or (i == 0 and not isinstance(d, int)):
            out.append(batch)
        elif d == "h" or (i == 2 and not isinstance(d, int)):
            out.append(h)
        elif d == "w" or (i == 3 and not isinstance(d, int)):
            out.append(w)
        else:
            raise BackendError(f"cannot choose a profile for dynamic dimension {d!r}")
    return tuple(out)


def choose_profile(
    inputs: dict[str, list[Any]],
    batch: int,
    size: tuple[int, int],
    max_size: tuple[int, int] | None = None,
    min_size: tuple[int, int] | None = None,
    min_batch: int = 1,
) -> Profile:
    """The optimization profile for frames of ``size`` (W, H), batches of up to ``batch``.

    ``inputs`` maps each graph input to its dims (ints, or the symbolic names ``n``/``h``/``w``
    used by the exporter). opt is (batch, ``size``); max is (batch, ``max_size`` or ``size``); min
    is (``min_batch``, ``min_size`` or ``size``): a video has one frame size, so the tightest
    spatial range is the default, while the batch may shrink for the last frames.
    """
    if batch < 1 or min_batch < 1 or min_batch > batch:
        raise BackendError(f"invalid batch range {min_batch}..{batch}")
    w, h = size
    mw, mh = max_size or size
    nw, nh = min_size or size
    if not (nw <= w <= mw and nh <= h <= mh):
        raise BackendError(f"profile sizes must satisfy min ≤ opt ≤ max (got {nw}x{nh} ≤ {w}x{h} ≤ {mw}x{mh})")
    shapes = []
    for name, spec in sorted(inputs.items()):
        shapes.append((name, _dims(spec, min_batch, nh, nw), _dims(spec, batch, h, w), _dims(spec, batch, mh, mw)))
    return Profile(tuple(shapes))


def preset_profile(inputs: dict[str, list[Any]], batch: int, target: tuple[int, int], scale: int,
                   max_size: tuple[int, int] | None = None) -> Profile:
    """A range profile covering every input a preset converts: up to ``target/scale`` (e.g. 960×540
    for ×4 into 3840×2160) or ``max_size``, down to 32×32, optimised for the largest size."""
    if max_size is None:
        max_size = (max(MIN_SIDE, target[0] // scale), max(MIN_SIDE, target[1] // scale))
    return choose_profile(inputs, batch, max_size, max_size, (MIN_SIDE, MIN_SIDE))


@dataclass(frozen=True)
class BuilderOptions:
    workspace_mib: int = 4096
    optimization_level: int = 3
    strongly_typed: bool = True
    contexts: int = 2  # one optimization profile + execution context + stream each

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeviceInfo:
    gpu: str
    compute_capability: str
    cuda: str

    @classmethod
    def current(cls, device: torch.device) -> "DeviceInfo":
        major, minor = torch.cuda.get_device_capability(device)
        return cls(torch.cuda.get_device_name(device), f"{major}.{minor}", str(torch.version.cuda))


def engine_key(onnx_sha256: str, fp16_settings: dict[str, Any] | None, trt_version: str, device: DeviceInfo,
               profile: Profile, options: BuilderOptions) -> dict[str, Any]:
    """Everything an engine depends on; any change means a different engine file."""
    return {
        "onnx_sha256": onnx_sha256,
        "fp16": fp16_settings,
        "tensorrt": trt_version,
        "gpu": device.gpu,
        "compute_capability": device.compute_capability,
        "cuda": device.cuda,
        "profile": profile.as_dict(),
        "builder": options.as_dict(),
    }


def timing_key(trt_version: str, device: DeviceInfo) -> dict[str, Any]:
    return {"tensorrt": trt_version, "gpu": device.gpu, "compute_capability": device.compute_capability,
            "cuda": device.cuda}


# --------------------------------------------------------------------------------------
# the toolkit: the only code that calls TensorRT's builder/runtime
# --------------------------------------------------------------------------------------


class Toolkit(Protocol):
    version: str

    def build(self, onnx_bytes: bytes, profile: Profile, options: BuilderOptions,
              timing_cache: bytes) -> tuple[bytes, bytes]: ...

    def deserialize(self, data: bytes) -> Any | None: ...


class TrtToolkit:
    """TensorRT's builder and runtime behind two calls (so tests can substitute a fake)."""

    def __init__(self, trt=None, device: torch.device | None = None) -> None:
        self.trt = trt or load_tensorrt()
        self.version = str(self.trt.__version__)
        sev = self.trt.Logger.WARNING
        self.logger = self.trt.Logger(sev)
        self.device = device
        self._runtime = None

    def build(self, onnx_bytes: bytes, profile: Profile, options: BuilderOptions,
              timing_cache: bytes) -> tuple[bytes, bytes]:
        trt = self.trt
        builder = trt.Builder(self.logger)
        flags = 0
        if options.strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(onnx_bytes):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"TensorRT cannot parse the ONNX graph: {errors or 'unknown error'}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mib) << 20)
        config.builder_optimization_level = int(options.optimization_level)
        cache = config.create_timing_cache(timing_cache or b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        for _ in range(max(1, options.contexts)):
            p = builder.create_optimization_profile()
            for name, mn, op, mx in profile.shapes:
                p.set_shape(name, mn, op, mx)
            config.add_optimization_profile(p)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError("TensorRT failed to build the engine (see the TensorRT log above)")
        new_cache = config.get_timing_cache()
        timing = bytes(new_cache.serialize()) if new_cache is not None else b""
        return bytes(serialized), timing

    def deserialize(self, data: bytes):
        if self._runtime is None:
            self._runtime = self.trt.Runtime(self.logger)
        return self._runtime.deserialize_cuda_engine(data)  # None on version mismatch/corruption


# --------------------------------------------------------------------------------------
# engine management (pure Python around the toolkit)
# --------------------------------------------------------------------------------------


@dataclass
class EngineManager:
    """Finds, builds and caches engines of one ONNX graph for the profiles it is asked for."""

    toolkit: Any
    cache: EngineCache
    onnx_bytes: bytes
    fp16_settings: dict[str, Any] | None
    device: DeviceInfo
    options: BuilderOptions = field(default_factory=BuilderOptions)
    name: str = "engine"
    inputs: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import hashlib

        self.onnx_sha256 = hashlib.sha256(self.onnx_bytes).hexdigest()

    def key(self, profile: Profile) -> dict[str, Any]:
        return engine_key(self.onnx_sha256, self.fp16_settings, self.toolkit.version, self.device, profile, self.options)

    def _base(self, key: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in key.items() if k != "profile"}

    def find_covering(self, shapes: dict[str, Shape]) -> Profile | None:
        """The tightest cached engine's profile that covers ``shapes`` (same graph, GPU, TRT…)."""
        want = json.loads(json.dumps(self._base(self.key(Profile(()))), default=str))
        best = None
        for entry in self.cache.entries():
            key = entry.meta.get("key") or {}
            if entry.kind != "engine" or "profile" not in key:
                continue
            if json.loads(json.dumps(self._base(key), default=str)) != want:
                continue
            prof = Profile.from_dict(key["profile"])
            if prof.covers(shapes) and (best is None or prof.volume() < best.volume()):
                best = prof
        return best

    def engine(self, profile: Profile, rebuild: bool = False):
        """(engine, path, built_now) for ``profile``: cached, or built (with the timing cache)."""
        key = self.key(profile)
        tkey = timing_key(self.toolkit.version, self.device)

        def build() -> bytes:
            log.warning("building a TensorRT engine for %s (%s); this takes a while once, then it is cached",
                        self.name, ", ".join(f"{n} max {list(mx)}" for n, _, _, mx in profile.shapes))
            data, timing = self.toolkit.build(self.onnx_bytes, profile, self.options, self.cache.read_timing(tkey))
            self.cache.write_timing(tkey, timing)
            return data

        return self.cache.load_or_build(key, build, self.toolkit.deserialize, name=self.name, rebuild=rebuild,
                                        extra=lambda: {"tensorrt": self.toolkit.version, "gpu": self.device.gpu})


# --------------------------------------------------------------------------------------
# execution
# --------------------------------------------------------------------------------------


def _torch_dtype(trt, dt) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8,
             trt.bool: torch.bool}
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    return table[dt]


class TrtRunner:
    """Executes an engine on torch CUDA tensors with N contexts/streams used round-robin."""

    def __init__(self, trt, engine, device: torch.device, contexts: int = 2) -> None:
        self.trt = trt
        self.engine = engine
        self.device = device
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: _torch_dtype(trt, engine.get_tensor_dtype(n)) for n in names}
        n_ctx = max(1, min(contexts, engine.num_optimization_profiles))
        self.contexts = []
        self.streams = [torch.cuda.Stream(device) for _ in range(n_ctx)]
        for i in range(n_ctx):
            ctx = engine.create_execution_context()
            if ctx is None:
                raise BackendError("TensorRT could not create an execution context (out of GPU memory?)")
            ctx.set_optimization_profile_async(i, self.streams[i].cuda_stream)
            self.contexts.append(ctx)
        self._next = 0

    def __call__(self, feeds: dict[str, Tensor]) -> dict[str, Tensor]:
        i = self._next
        self._next = (i + 1) % len(self.contexts)
        ctx, stream = self.contexts[i], self.streams[i]
        current = torch.cuda.current_stream(self.device)
        stream.wait_stream(current)  # the inputs were produced on the caller's stream
        outs: dict[str, Tensor] = {}
        with torch.cuda.stream(stream):
            for name in self.inputs:
                t = feeds[name].to(self.device, self.dtypes[name], non_blocking=True).contiguous()
                t.record_stream(stream)
                if not ctx.set_input_shape(name, tuple(t.shape)):
                    raise BackendError(f"input {name} shape {tuple(t.shape)} is outside the engine's profile")
                ctx.set_tensor_address(name, t.data_ptr())
            for name in self.outputs:
                shape = tuple(ctx.get_tensor_shape(name))
                y = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
                ctx.set_tensor_address(name, y.data_ptr())
                outs[name] = y
            if not ctx.execute_async_v3(stream.cuda_stream):
                raise BackendError("TensorRT execution failed (see the TensorRT log)")
        current.wait_stream(stream)
        for y in outs.values():
            y.record_stream(current)
        return outs


# --------------------------------------------------------------------------------------
# the backend
# --------------------------------------------------------------------------------------


class TensorRTBackend:
    """FP16 TensorRT engines of a model, built on first use for the frame size and cached."""

    name = "tensorrt"

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cuda",
        *,
        batch: int | None = None,
        max_size: tuple[int, int] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        options: BuilderOptions | None = None,
        rebuild: bool = False,
        fp16: bool = True,
        toolkit: Any = None,
        device_info: DeviceInfo | None = None,
    ) -> None:
        if toolkit is None:
            trt = load_tensorrt()  # first: "not installed" is the more useful message
            self.device = require_cuda(device)
            toolkit = TrtToolkit(trt, self.device)
        else:
            self.device = torch.device(device)
        self.toolkit = toolkit
        self.model = model.eval()
        self.scale = int(getattr(model, "scale", 1))
        self.batch = int(batch or 1)
        self.max_size = max_size
        self.rebuild = rebuild
        self.fp16 = fp16
        self.options = options or BuilderOptions()
        self.cache = EngineCache(cache_dir)
        self.device_info = device_info or DeviceInfo.current(self.device)
        self._managers: dict[str, EngineManager] = {}
        self._runners: dict[tuple[str, Profile], Any] = {}
        self.engine_paths: list[str] = []

    # -- graphs and engines ----------------------------------------------------------------
    def manager(self, kind: str = "full") -> EngineManager:
        if kind not in self._managers:
            import onnx

            from .fp16 import default_settings
            from .onnx_export import cached_onnx

            path = cached_onnx(self.model, kind, fp16=self.fp16, cache_dir=self.cache.root)
            blob = path.read_bytes()
            proto = onnx.load_from_string(blob)
            inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
            arch = str(getattr(self.model, "arch", "") or "model")
            self._managers[kind] = EngineManager(
                self.toolkit, self.cache, blob, default_settings() if self.fp16 else None, self.device_info,
                self.options, name=f"{arch}-{kind}", inputs=inputs)
        return self._managers[kind]

    def profile_for(self, kind: str, shapes: dict[str, Shape]) -> Profile:
        """A cached engine's profile covering ``shapes``, else a new one fitted to them."""
        mgr = self.manager(kind)
        if not self.rebuild:
            found = mgr.find_covering(shapes)
            if found is not None:
                return found
        n, _, h, w = shapes["x"]
        batch = max(self.batch, n)
        if self.max_size is not None and kind != "tile":
            mw, mh = max(self.max_size[0], w), max(self.max_size[1], h)
            return choose_profile(mgr.inputs, batch, (w, h), (mw, mh), (min(MIN_SIDE, w), min(MIN_SIDE, h)))
        return choose_profile(mgr.inputs, batch, (w, h))

    def runner(self, kind: str, shapes: dict[str, Shape]):
        for (k, prof), r in self._runners.items():
            if k == kind and prof.covers(shapes):
                return r
        prof = self.profile_for(kind, shapes)
        engine, path, built = self.manager(kind).engine(prof, rebuild=self.rebuild)
        self.rebuild = False  # once per backend
        self.engine_paths.append(str(path))
        log.info("TensorRT engine %s %s", path.name, "built" if built else "loaded from the cache")
        runner = TrtRunner(self.toolkit.trt, engine, self.device, self.options.contexts)
        self._runners[(kind, prof)] = runner
        return runner

    def build_for(self, profile: Profile, kind: str = "full") -> str:
        """Build (or find) the engine of ``profile`` without running it; returns its path."""
        _, path, _ = self.manager(kind).engine(profile, rebuild=self.rebuild)
        return str(path)

    # -- running ---------------------------------------------------------------------------
    @torch.inference_mode()
    def run(self, x: Tensor) -> Tensor:
        x = x.to(self.device, non_blocking=True)
        y = self.runner("full", {"x": tuple(x.shape)})({"x": x})["y"]
        return y.to(x.dtype)

    @torch.inference_mode()
    def context(self, x: Tensor) -> tuple[Tensor, ...] | None:
        """The model's image-level statistics of each frame (the context engine), FP32."""
        from .onnx_export import context_arity

        if context_arity(self.model) == 0:
            return None
        x = x.to(self.device, non_blocking=True)
        out = self.runner("context", {"x": tuple(x.shape)})({"x": x})
        return tuple(out[k].float() for k in sorted(out, key=lambda k: int(k[3:])))

    @torch.inference_mode()
    def run_with_context(self, x: Tensor, context: tuple[Tensor, ...] | None, tile: int = 0, overlap: int = 16) -> Tensor:
        """The tile engine with fixed statistics, on the whole frame or in blended tiles."""
        from ..processors.tiling import tiled_forward

        x = x.to(self.device, non_blocking=True)
        if context is None:
            fn = self.run
        else:
            ctx = {f"ctx{i}": c.to(self.device).float() for i, c in enumerate(context)}

            def fn(t: Tensor) -> Tensor:
                shapes = {"x": tuple(t.shape), **{k: tuple(v.shape) for k, v in ctx.items()}}
                return self.runner("tile", shapes)({"x": t, **ctx})["y"].to(t.dtype)

        h, w = x.shape[-2:]
        if not tile or (h <= tile and w <= tile):
            return fn(x)
        return tiled_forward(fn, x, self.scale, tile, overlap, margin=tile_margin(self.model, overlap))

    def run_tiled(self, x: Tensor, tile: int, overlap: int) -> Tensor:
        """Exact tiling: context engine on the whole frame, tile engine on every tile."""
        h, w = x.shape[-2:]
        if h <= tile and w <= tile:
            return self.run(x)
        return self.run_with_context(x, self.context(x), tile, overlap)
