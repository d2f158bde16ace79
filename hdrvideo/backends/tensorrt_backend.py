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
    ``Runtime.deserialize_cuda_engine`` → one execution context (``set_optimization_profile_async``
    checked), enqueued with ``execute_async_v3`` on the caller's current torch stream. I/O are
    torch CUDA tensors: ``set_input_shape``, ``set_tensor_address(data_ptr)``; no pycuda.
    One context, not two used in turn: the pipeline's device thread finishes a batch (its packed
    planes go to the host) before it starts the next, so a second context never overlapped
    anything — it cost a second profile's build time and its own activation memory. Enqueueing
    on the caller's stream also orders the engine after the colour conversion that made its input
    and before the packing that reads its output, with no cross-stream waits.

Device
    Everything that touches CUDA — parse and build, deserialise, context creation, enqueue — runs
    under ``torch.cuda.device(N)`` of ``--device cuda:N`` (TensorRT uses the calling thread's
    current device, and the device thread is not the thread that built the backend).

Failing early
    The backend exports and parses its graphs when it is created (with ``input_size`` it also builds
    or loads their engines), so an unsupported graph or a build out of memory is a
    :class:`BackendError` at construction, where ``--backend auto`` falls through to the next
    candidate, never a crash at the first batch.

Engine cache (:mod:`.engine_cache`)
    The key holds what decides whether an engine can run and what it computes: the ONNX hash, the
    FP16-conversion settings (and strong typing), the TensorRT version, the GPU name and compute
    capability, TensorRT's CUDA version (:func:`tensorrt_cuda_version`) and the profile shapes.
    Builder options that only change how long a build takes or how fast the engine is
    (workspace, optimisation level) are recorded in the sidecar, not the key, so a prebuilt
    engine is found whatever they were. An engine that fails to deserialize is rebuilt with a
    warning.

Everything that needs no GPU (keys, profile choice, covering-engine lookup, the rebuild logic)
is plain Python, unit-tested with a fake toolkit; ``import tensorrt`` happens only in
:func:`load_tensorrt`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from ..errors import BackendError
from .base import TwoPartRunner, whole_or_tiled
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
    "TrtRunner",
    "EngineManager",
    "preset_profile",
    "tensorrt_cuda_version",
    "device_scope",
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


def require_onnx() -> None:
    """The tensorrt backend exports and parses ONNX: a one-line :class:`BackendError` without it."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise BackendError("the tensorrt backend needs the 'onnx' package: pip install 'hdrvideo[tensorrt]'") from None


def device_scope(device: torch.device | None):
    """``torch.cuda.device(device)`` for a CUDA device (TensorRT works on the calling thread's
    current device), else a no-op."""
    if device is not None and device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def tensorrt_cuda_version(distributions=None, environ=None) -> str:
    """The CUDA version TensorRT runs on — what its engines depend on, not ``torch.version.cuda``.

    TensorRT's Python API does not report it, so it is read from how TensorRT was installed:
    the CUDA major in its pip distributions' names (``tensorrt-cu12``, ``tensorrt_cu13_libs``,
    …) with the minor from the CUDA runtime wheel installed beside it
    (``nvidia-cuda-runtime-cu12`` / ``nvidia-cuda-runtime``); else ``$CUDA_VERSION``, which
    NVIDIA's containers (the Docker base image, whose TensorRT is a plain ``tensorrt``
    distribution) set; else ``"unknown"``. ``distributions`` ((name, version) pairs) and
    ``environ`` are for tests.
    """
    if distributions is None:
        from importlib import metadata

        distributions = []
        for d in metadata.distributions():
            try:
                distributions.append((d.metadata["Name"] or "", d.version or ""))
            except Exception:  # noqa: BLE001 - a broken distribution must not break the backend
                continue
    env = os.environ if environ is None else environ
    norm = [(re.sub(r"[-_.]+", "-", n).lower(), v) for n, v in distributions]
    majors = {m.group(1) for n, _ in norm if (m := re.fullmatch(r"tensorrt-cu(\d+)(-bindings|-libs)?", n))}
    if len(majors) == 1:
        major = majors.pop()
        for n, v in norm:
            if n in (f"nvidia-cuda-runtime-cu{major}", "nvidia-cuda-runtime") and v.split(".")[0] == major:
                return ".".join(v.split(".")[:2])
        return major
    cuda = str(env.get("CUDA_VERSION", "")).strip()
    if re.fullmatch(r"\d+\.\d+(\.\d+)*", cuda):
        return ".".join(cuda.split(".")[:2])
    return "unknown"


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
    """How an engine is built. Only ``strongly_typed`` changes what the engine computes (it is in
    the cache key); the workspace and the optimisation level change build time and speed only."""

    workspace_mib: int = 4096
    optimization_level: int = 3
    strongly_typed: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeviceInfo:
    gpu: str
    compute_capability: str
    cuda: str  # TensorRT's CUDA (:func:`tensorrt_cuda_version`)

    @classmethod
    def current(cls, device: torch.device, cuda: str | None = None) -> "DeviceInfo":
        major, minor = torch.cuda.get_device_capability(device)
        return cls(torch.cuda.get_device_name(device), f"{major}.{minor}", cuda or tensorrt_cuda_version())


def engine_key(onnx_sha256: str, fp16_settings: dict[str, Any] | None, trt_version: str, device: DeviceInfo,
               profile: Profile, options: BuilderOptions | None = None) -> dict[str, Any]:
    """What decides whether a cached engine can serve a request: graph, precision, TensorRT, GPU,
    CUDA and profile. Builder options other than strong typing are deliberately not in it."""
    return {
        "onnx_sha256": onnx_sha256,
        "fp16": fp16_settings,
        "strongly_typed": True if options is None else bool(options.strongly_typed),
        "tensorrt": trt_version,
        "gpu": device.gpu,
        "compute_capability": device.compute_capability,
        "cuda": device.cuda,
        "profile": profile.as_dict(),
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
    """TensorRT's parser, builder and runtime behind a few calls (so tests can substitute a fake).

    Every call runs on ``device`` (:func:`device_scope`).
    """

    def __init__(self, trt=None, device: torch.device | None = None) -> None:
        self.trt = trt or load_tensorrt()
        self.version = str(self.trt.__version__)
        sev = self.trt.Logger.WARNING
        self.logger = self.trt.Logger(sev)
        self.device = device
        self._runtime = None

    def _parse(self, onnx_bytes: bytes, strongly_typed: bool = True):
        trt = self.trt
        builder = trt.Builder(self.logger)
        if builder is None:
            raise BackendError("TensorRT could not create a builder (is the GPU usable?)")
        flags = 0
        if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(onnx_bytes):
            errors = "; ".join(str(parser.get_error(i)).splitlines()[0] for i in range(parser.num_errors))
            raise BackendError(f"TensorRT cannot parse the ONNX graph: {errors or 'unknown error'}")
        return builder, network, parser

    def check(self, onnx_bytes: bytes) -> None:
        """Parse ``onnx_bytes`` into a strongly typed network: the cheap part of a build that
        fails for graphs TensorRT cannot run."""
        with device_scope(self.device):
            self._parse(onnx_bytes)

    def build(self, onnx_bytes: bytes, profile: Profile, options: BuilderOptions,
              timing_cache: bytes) -> tuple[bytes, bytes]:
        trt = self.trt
        with device_scope(self.device):
            builder, network, _parser = self._parse(onnx_bytes, options.strongly_typed)
            config = builder.create_builder_config()
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mib) << 20)
            config.builder_optimization_level = int(options.optimization_level)
            cache = config.create_timing_cache(timing_cache or b"")
            if not config.set_timing_cache(cache, ignore_mismatch=False):
                log.warning("the saved TensorRT timing cache does not fit this GPU/TensorRT; building without it")
                cache = config.create_timing_cache(b"")
                if not config.set_timing_cache(cache, ignore_mismatch=False):
                    raise BackendError("TensorRT refused a new timing cache (see the TensorRT log above)")
            p = builder.create_optimization_profile()
            for name, mn, op, mx in profile.shapes:
                p.set_shape(name, mn, op, mx)
            if config.add_optimization_profile(p) < 0:
                raise BackendError("TensorRT refused the optimisation profile (see the TensorRT log above)")
            serialized = builder.build_serialized_network(network, config)
            if serialized is None:
                raise BackendError("TensorRT failed to build the engine (see the TensorRT log above)")
            new_cache = config.get_timing_cache()
            timing = bytes(new_cache.serialize()) if new_cache is not None else b""
        return bytes(serialized), timing

    def deserialize(self, data: bytes):
        with device_scope(self.device):
            if self._runtime is None:
                self._runtime = self.trt.Runtime(self.logger)
            return self._runtime.deserialize_cuda_engine(data)  # None on version mismatch/corruption

    def runner(self, engine, device: torch.device) -> "TrtRunner":
        with device_scope(device):
            return TrtRunner(self.trt, engine, device)


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
        """The tightest cached engine's profile that covers ``shapes``: same graph, precision,
        TensorRT, GPU, compute capability and CUDA; built with any workspace or optimisation level."""
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
                                        extra=lambda: {"tensorrt": self.toolkit.version, "gpu": self.device.gpu,
                                                       "builder": self.options.as_dict()})


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
    """Executes an engine on torch CUDA tensors: one execution context, the caller's stream.

    Call it under :func:`device_scope` of its device. Inputs are cast to the engine's I/O types
    (FP32 for the graphs hdrvideo exports); outputs are new torch tensors on the same stream.
    """

    def __init__(self, trt, engine, device: torch.device) -> None:
        self.trt = trt
        self.engine = engine
        self.device = device
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: _torch_dtype(trt, engine.get_tensor_dtype(n)) for n in names}
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendError("TensorRT could not create an execution context (out of GPU memory?)")
        stream = torch.cuda.current_stream(device)
        if not self.context.set_optimization_profile_async(0, stream.cuda_stream):
            raise BackendError("TensorRT could not select the engine's optimisation profile")

    def __call__(self, feeds: dict[str, Tensor]) -> dict[str, Tensor]:
        ctx = self.context
        stream = torch.cuda.current_stream(self.device)
        keep = []  # inputs live until the call returns; later work on this stream reuses their memory safely
        for name in self.inputs:
            t = feeds[name].to(self.device, self.dtypes[name], non_blocking=True).contiguous()
            keep.append(t)
            if not ctx.set_input_shape(name, tuple(t.shape)):
                raise BackendError(f"input {name} shape {tuple(t.shape)} is outside the engine's profile")
            if not ctx.set_tensor_address(name, t.data_ptr()):
                raise BackendError(f"TensorRT refused the address of input {name}")
        outs: dict[str, Tensor] = {}
        for name in self.outputs:
            shape = tuple(ctx.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendError(f"TensorRT could not infer the shape of output {name}")
            y = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
            if not ctx.set_tensor_address(name, y.data_ptr()):
                raise BackendError(f"TensorRT refused the address of output {name}")
            outs[name] = y
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise BackendError("TensorRT execution failed (see the TensorRT log)")
        return outs


# --------------------------------------------------------------------------------------
# the backend
# --------------------------------------------------------------------------------------


class TensorRTBackend(TwoPartRunner):
    """FP16 TensorRT engines of a model, cached on disk; see the module docstring.

    ``input_size`` (W, H) and ``batch``: the frames the backend will see. Given them, the engines
    are built (or loaded) at construction; ``tile`` > 0 smaller than the frame means the context
    and tile engines instead of the whole-frame one. Either way the graphs are parsed at
    construction (``prepare=False`` defers everything to the first call).
    """

    name = "tensorrt"

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cuda",
        *,
        batch: int | None = None,
        max_size: tuple[int, int] | None = None,
        input_size: tuple[int, int] | None = None,
        tile: int = 0,
        two_part: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        options: BuilderOptions | None = None,
        rebuild: bool = False,
        fp16: bool = True,
        toolkit: Any = None,
        device_info: DeviceInfo | None = None,
        prepare: bool = True,
    ) -> None:
        if toolkit is None:
            trt = load_tensorrt()  # first: "not installed" is the more useful message
            self.device = require_cuda(device)
            require_onnx()
            toolkit = TrtToolkit(trt, self.device)
        else:
            self.device = torch.device(device)
        self.toolkit = toolkit
        self.model = model.eval()
        self.scale = int(getattr(model, "scale", 1))
        self.batch = int(batch or 1)
        self.max_size = max_size
        self.tile = int(tile or 0)
        #: frames run as context + tile engines even untiled (temporally smoothed statistics)
        self.two_part = bool(two_part)
        self.rebuild = rebuild
        self.fp16 = fp16
        self.options = options or BuilderOptions()
        self.cache = EngineCache(cache_dir)
        if device_info is None:
            with device_scope(self.device):
                device_info = DeviceInfo.current(self.device)
        self.device_info = device_info
        self._managers: dict[str, EngineManager] = {}
        self._runners: dict[tuple[str, Profile], Any] = {}
        self._arity: int | None = None
        self._checked: set[str] = set()
        self.engine_paths: list[str] = []
        if prepare:
            self.prepare(input_size)

    def describe(self) -> str:
        return f"TensorRT {self.toolkit.version} ({'FP16 graph, FP32 statistics' if self.fp16 else 'FP32'})"

    # -- graphs and engines ----------------------------------------------------------------
    @property
    def context_arity(self) -> int:
        """How many statistics tensors the model's context graph returns (computed once)."""
        if self._arity is None:
            from .onnx_export import context_arity

            self._arity = context_arity(self.model)
        return self._arity

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

    def _check(self, kind: str) -> None:
        """Export the graph and let TensorRT parse it (once per graph)."""
        if kind in self._checked:
            return
        mgr = self.manager(kind)
        check = getattr(self.toolkit, "check", None)
        if check is not None:
            check(mgr.onnx_bytes)
        self._checked.add(kind)

    def plan(self, input_size: tuple[int, int] | None) -> list[tuple[str, tuple[int, int] | None]]:
        """(graph kind, (W, H) of its input or None) that converting frames of ``input_size`` uses."""
        if input_size is None:
            return [("full", None)]
        w, h = input_size
        if self.tile and (w > self.tile or h > self.tile):
            tile = (min(self.tile, w), min(self.tile, h))
            if self.context_arity == 0:
                return [("full", tile)]
            return [("context", (w, h)), ("tile", tile)]
        if self.two_part and self.context_arity:
            return [("context", (w, h)), ("tile", (w, h))]
        return [("full", (w, h))]

    def shapes(self, kind: str, batch: int, size: tuple[int, int]) -> dict[str, Shape]:
        """Every input's shape for a batch of frames (or tiles) of ``size`` (W, H)."""
        w, h = size
        return {name: _dims(spec, batch, h, w) for name, spec in self.manager(kind).inputs.items()}

    def prepare(self, input_size: tuple[int, int] | None = None) -> None:
        """Parse the graphs now, and with ``input_size`` build or load their engines and contexts.

        Any failure — a graph TensorRT cannot parse, a build out of memory, an engine that does
        not deserialize — is a one-line :class:`BackendError` here, where ``auto`` falls through.
        """
        try:
            with device_scope(self.device):
                todo = self.plan(input_size)
                for kind, _ in todo:
                    self._check(kind)
                for kind, size in todo:
                    if size is not None:
                        self.runner(kind, self.shapes(kind, self.batch, size))
        except BackendError:
            raise
        except Exception as err:  # noqa: BLE001 - TensorRT/CUDA raise many types; auto needs one
            arch = str(getattr(self.model, "arch", "") or "the model")
            raise BackendError(f"TensorRT cannot prepare {arch}: {type(err).__name__}: "
                               f"{(str(err).splitlines() or [''])[0]}") from err

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
        make = getattr(self.toolkit, "runner", None)
        runner = make(engine, self.device) if make is not None else TrtRunner(self.toolkit.trt, engine, self.device)
        self._runners[(kind, prof)] = runner
        return runner

    def build_for(self, profile: Profile, kind: str = "full") -> str:
        """Build (or find) the engine of ``profile`` without running it; returns its path."""
        with device_scope(self.device):
            _, path, _ = self.manager(kind).engine(profile, rebuild=self.rebuild)
        return str(path)

    # -- running ---------------------------------------------------------------------------
    @torch.inference_mode()
    def run(self, x: Tensor) -> Tensor:
        with device_scope(self.device):
            xd = x.to(self.device, non_blocking=True)
            y = self.runner("full", {"x": tuple(xd.shape)})({"x": xd})["y"]
            return y.to(x.dtype)

    @torch.inference_mode()
    def context(self, x: Tensor, tile: int = 0) -> tuple[Tensor, ...] | None:
        """The model's image-level statistics of each frame (the context engine), FP32.
        ``tile`` is not needed on a GPU (the context engine's memory is small there)."""
        if self.context_arity == 0:
            return None
        with device_scope(self.device):
            x = x.to(self.device, non_blocking=True)
            out = self.runner("context", {"x": tuple(x.shape)})({"x": x})
            return tuple(out[k].float() for k in sorted(out, key=lambda k: int(k[3:])))

    @torch.inference_mode()
    def run_with_context(self, x: Tensor, context: tuple[Tensor, ...] | None, tile: int = 0, overlap: int = 16) -> Tensor:
        """The tile engine with fixed statistics, on the whole frame or in blended tiles."""
        with device_scope(self.device):
            x = x.to(self.device, non_blocking=True)
            if context is None:
                fn = self.run
            else:
                ctx = {f"ctx{i}": c.to(self.device).float() for i, c in enumerate(context)}

                def fn(t: Tensor) -> Tensor:
                    shapes = {"x": tuple(t.shape), **{k: tuple(v.shape) for k, v in ctx.items()}}
                    return self.runner("tile", shapes)({"x": t, **ctx})["y"].to(t.dtype)

            return whole_or_tiled(fn, x, self.model, tile, overlap)

