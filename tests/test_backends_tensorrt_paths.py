"""The TensorRT backend's GPU-path logic, on the CPU, with fakes of TensorRT's API.

* a fake ``tensorrt`` module (the calls :class:`TrtToolkit` and :class:`TrtRunner` make, with
  the documented return values) checks the return codes, the one profile, the timing cache;
* an "ONNX Runtime toolkit" builds "engines" that are the exported graphs themselves and runs
  them with ONNX Runtime on the CPU — the oracle for which graphs the backend builds, when, and
  what it feeds them;
* the device scope, the ``auto`` fall-through, the cache key (TensorRT's CUDA, builder options).
"""

from __future__ import annotations

import json
import logging
import types
from contextlib import contextmanager

import pytest
import torch

from hdrvideo import models
from hdrvideo.backends import tensorrt_backend as trb
from hdrvideo.backends.engine_cache import EngineCache
from hdrvideo.backends.tensorrt_backend import (
    BuilderOptions,
    DeviceInfo,
    EngineManager,
    TensorRTBackend,
    TrtRunner,
    TrtToolkit,
    choose_profile,
    preset_profile,
    tensorrt_cuda_version,
)
from hdrvideo.errors import BackendError

INPUTS = {"x": ["n", 3, "h", "w"]}
DEV = DeviceInfo("NVIDIA Test GPU", "9.0", "12.6")


# ---------------------------------------------------------------- TensorRT's CUDA version


@pytest.mark.parametrize("dists,env,want", [
    ([("tensorrt", "10.13.3"), ("tensorrt-cu12", "10.13.3"), ("tensorrt_cu12_libs", "10.13.3"),
      ("tensorrt_cu12_bindings", "10.13.3"), ("nvidia-cuda-runtime-cu12", "12.6.77")], {}, "12.6"),
    ([("tensorrt-cu13", "10.14.1"), ("tensorrt_cu13_libs", "10.14.1"), ("nvidia-cuda-runtime", "13.0.96"),
      ("nvidia-cuda-runtime-cu12", "12.8.90")], {"CUDA_VERSION": "12.8.0"}, "13.0"),
    ([("tensorrt-cu12-libs", "10.7.0")], {}, "12"),
    ([("tensorrt", "10.7.0")], {"CUDA_VERSION": "12.6.3"}, "12.6"),  # NVIDIA's container (Docker base)
    ([("tensorrt", "10.7.0"), ("torch", "2.11.0")], {}, "unknown"),
])
def test_tensorrt_cuda_version_is_tensorrts_not_torchs(dists, env, want):
    assert tensorrt_cuda_version(dists, env) == want


# ---------------------------------------------------------------- builder options and the cache


class FakeEngine:
    def __init__(self, data: bytes) -> None:
        self.data = data


class BytesToolkit:
    version = "10.9.0"

    def __init__(self) -> None:
        self.builds = 0

    def build(self, onnx_bytes, profile, options, timing_cache):
        self.builds += 1
        return b"ENGINE " + json.dumps(profile.as_dict()).encode(), b"T"

    def deserialize(self, data):
        return FakeEngine(data) if data.startswith(b"ENGINE ") else None


def test_prebuilt_engine_with_another_workspace_is_found_and_loaded(tmp_path):
    built_with = BuilderOptions(workspace_mib=8192, optimization_level=5)
    pre = EngineManager(BytesToolkit(), EngineCache(tmp_path), b"graph", {"version": 1}, DEV, built_with,
                        name="irnet-5-x4-full", inputs=INPUTS)
    wide = preset_profile(INPUTS, 2, (3840, 2160), 4)
    _, path, built = pre.engine(wide)
    assert built
    side = json.loads(path.with_suffix(".engine.json").read_text())
    assert side["builder"]["workspace_mib"] == 8192 and "builder" not in side["key"]
    tk = BytesToolkit()
    run = EngineManager(tk, EngineCache(tmp_path), b"graph", {"version": 1}, DEV, BuilderOptions(),
                        name="irnet-5-x4-full", inputs=INPUTS)
    found = run.find_covering({"x": (1, 3, 540, 960)})
    assert found == wide
    _, path2, built2 = run.engine(found)
    assert path2 == path and not built2 and tk.builds == 0
    # but not an engine of other precision settings
    other = EngineManager(tk, EngineCache(tmp_path), b"graph", {"version": 2}, DEV, BuilderOptions(),
                          name="irnet-5-x4-full", inputs=INPUTS)
    assert other.find_covering({"x": (1, 3, 540, 960)}) is None


# ---------------------------------------------------------------- a fake tensorrt module


def fake_trt(*, parse_ok=True, timing_ok=(True,), profile_ok=True, execute_ok=True, build_ok=True):
    """The subset of the ``tensorrt`` Python API the toolkit and the runner use."""
    log: dict = {"profiles": [], "timing_caches": [], "flags": None, "execute": 0, "shapes": {}}
    timing_answers = list(timing_ok)

    class Logger:
        WARNING = 2

        def __init__(self, sev):
            self.sev = sev

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, mn, op, mx):
            self.shapes[name] = (mn, op, mx)

    class TimingCache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return self.data + b"+"

    class Config:
        builder_optimization_level = 3

        def __init__(self):
            self.cache = None

        def set_memory_pool_limit(self, pool, size):
            log["workspace"] = size

        def create_timing_cache(self, data):
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            log["timing_caches"].append(cache.data)
            ok = timing_answers.pop(0) if timing_answers else True
            if ok:
                self.cache = cache
            return ok

        def get_timing_cache(self):
            return self.cache

        def add_optimization_profile(self, p):
            log["profiles"].append(p.shapes)
            return len(log["profiles"]) - 1 if profile_ok else -1

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            log["flags"] = flags
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"PLAN" if build_ok else None

    class OnnxParser:
        def __init__(self, network, logger):
            self.num_errors = 0 if parse_ok else 2

        def parse(self, data):
            return parse_ok

        def get_error(self, i):
            return f"node {i}: unsupported operator Foo\nmore detail"

    class Context:
        def set_optimization_profile_async(self, i, stream):
            log["profile_set"] = (i, stream)
            return profile_ok

        def set_input_shape(self, name, shape):
            log["shapes"][name] = shape
            return True

        def set_tensor_address(self, name, ptr):
            return ptr != 0

        def get_tensor_shape(self, name):
            n, c, h, w = log["shapes"]["x"]
            return (n, 3, 2 * h, 2 * w)

        def execute_async_v3(self, stream):
            log["execute"] += 1
            return execute_ok

    class Engine:
        num_io_tensors = 2
        num_optimization_profiles = 1

        def get_tensor_name(self, i):
            return ["x", "y"][i]

        def get_tensor_mode(self, name):
            return IOMode.INPUT if name == "x" else IOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return "f32"

        def create_execution_context(self):
            log["contexts"] = log.get("contexts", 0) + 1
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine() if data == b"PLAN" else None

    IOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt = types.SimpleNamespace(
        __version__="10.9.0", Logger=Logger, Builder=Builder, OnnxParser=OnnxParser, Runtime=Runtime,
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=1),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE=0), TensorIOMode=IOMode,
        float32="f32", float16="f16", int32="i32", int8="i8", bool="b",
    )
    return trt, log


def test_toolkit_builds_one_profile_strongly_typed_with_the_timing_cache():
    trt, log = fake_trt()
    tk = TrtToolkit(trt)
    prof = choose_profile(INPUTS, 2, (240, 136))
    plan, timing = tk.build(b"onnx", prof, BuilderOptions(workspace_mib=512), b"saved")
    assert plan == b"PLAN" and timing == b"saved+"
    assert len(log["profiles"]) == 1 and log["profiles"][0]["x"][2] == (2, 3, 136, 240)
    assert log["flags"] == 1 << 1 and log["workspace"] == 512 << 20
    assert tk.deserialize(plan) is not None and tk.deserialize(b"junk") is None


def test_a_timing_cache_that_does_not_fit_is_dropped_with_a_warning(caplog):
    trt, log = fake_trt(timing_ok=(False, True))
    with caplog.at_level(logging.WARNING):
        plan, timing = TrtToolkit(trt).build(b"onnx", choose_profile(INPUTS, 1, (64, 64)), BuilderOptions(), b"old")
    assert plan == b"PLAN" and log["timing_caches"] == [b"old", b""] and timing == b"+"
    assert any("timing cache" in r.message for r in caplog.records)
    trt, _ = fake_trt(timing_ok=(False, False))
    with pytest.raises(BackendError, match="timing cache"):
        TrtToolkit(trt).build(b"onnx", choose_profile(INPUTS, 1, (64, 64)), BuilderOptions(), b"old")


def test_parse_errors_and_failed_builds_are_one_line_backend_errors():
    trt, _ = fake_trt(parse_ok=False)
    with pytest.raises(BackendError, match="cannot parse") as err:
        TrtToolkit(trt).check(b"onnx")
    assert "\n" not in str(err.value) and "unsupported operator Foo" in str(err.value)
    trt, _ = fake_trt(build_ok=False)
    with pytest.raises(BackendError, match="failed to build"):
        TrtToolkit(trt).build(b"onnx", choose_profile(INPUTS, 1, (64, 64)), BuilderOptions(), b"")
    trt, _ = fake_trt(profile_ok=False)
    with pytest.raises(BackendError, match="profile"):
        TrtToolkit(trt).build(b"onnx", choose_profile(INPUTS, 1, (64, 64)), BuilderOptions(), b"")


@pytest.fixture
def cpu_streams(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: types.SimpleNamespace(cuda_stream=7))


def test_runner_uses_one_context_on_the_callers_stream_and_checks_every_call(cpu_streams):
    trt, log = fake_trt()
    engine = trt.Runtime(None).deserialize_cuda_engine(b"PLAN")
    runner = TrtRunner(trt, engine, torch.device("cpu"))
    assert log["contexts"] == 1 and log["profile_set"] == (0, 7)
    out = runner({"x": torch.zeros(2, 3, 8, 12)})
    assert tuple(out["y"].shape) == (2, 3, 16, 24) and log["execute"] == 1
    trt, _ = fake_trt(profile_ok=False)
    with pytest.raises(BackendError, match="optimisation profile"):
        TrtRunner(trt, trt.Runtime(None).deserialize_cuda_engine(b"PLAN"), torch.device("cpu"))
    trt, _ = fake_trt(execute_ok=False)
    bad = TrtRunner(trt, trt.Runtime(None).deserialize_cuda_engine(b"PLAN"), torch.device("cpu"))
    with pytest.raises(BackendError, match="execution failed"):
        bad({"x": torch.zeros(1, 3, 8, 8)})


# ---------------------------------------------------------------- ONNX Runtime as the engine


class OrtToolkit:
    """'Builds' an engine that is the graph itself and runs it with ONNX Runtime on the CPU,
    refusing inputs outside the profile as TensorRT's ``set_input_shape`` does."""

    version = "10.9.0"

    def __init__(self, fail_check: bool = False, fail_build: Exception | None = None) -> None:
        self.builds: list[str] = []
        self.checked = 0
        self.fail_check = fail_check
        self.fail_build = fail_build
        self.events: list[tuple[str, object]] = []

    def check(self, onnx_bytes):
        self.events.append(("check", trb_current()))
        self.checked += 1
        if self.fail_check:
            raise BackendError("TensorRT cannot parse the ONNX graph: node 3: unsupported operator")

    def build(self, onnx_bytes, profile, options, timing_cache):
        self.events.append(("build", trb_current()))
        if self.fail_build is not None:
            raise self.fail_build
        import onnx

        kind = next(p.value for p in onnx.load_from_string(onnx_bytes).metadata_props if p.key == "hdrvideo.graph")
        self.builds.append(kind)
        return json.dumps({"profile": profile.as_dict()}).encode() + b"\0" + onnx_bytes, b""

    def deserialize(self, data):
        self.events.append(("deserialize", trb_current()))
        head, _, graph = data.partition(b"\0")
        return (trb.Profile.from_dict(json.loads(head)["profile"]), graph)

    def runner(self, engine, device):
        import numpy as np
        import onnxruntime as ort

        profile, graph = engine
        sess = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        outputs = [o.name for o in sess.get_outputs()]

        def run(feeds):
            shapes = {k: tuple(v.shape) for k, v in feeds.items()}
            if not profile.covers(shapes):
                raise BackendError(f"shapes {shapes} are outside the engine's profile")
            arrays = {k: np.ascontiguousarray(v.detach().float().numpy()) for k, v in feeds.items()}
            return {k: torch.from_numpy(v) for k, v in zip(outputs, sess.run(outputs, arrays))}

        return run


_SCOPE: list = []


def trb_current():
    return _SCOPE[-1] if _SCOPE else None


@pytest.fixture
def recorded_scope(monkeypatch):
    """Records the device every TensorRT call runs under (``torch.cuda.device`` is CUDA-only)."""
    @contextmanager
    def scope(device):
        _SCOPE.append(str(device))
        try:
            yield
        finally:
            _SCOPE.pop()

    monkeypatch.setattr(trb, "device_scope", scope)
    yield
    _SCOPE.clear()


def _backend(tmp_path, model, toolkit, device="cpu", **kw):
    return TensorRTBackend(model, device, toolkit=toolkit, device_info=DEV, cache_dir=tmp_path, **kw)


@pytest.fixture(scope="module")
def irnet():
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    return models.create("irnet-1-48").eval()


def test_engines_are_built_at_construction_for_the_frame_size_and_match_torch(tmp_path, irnet, recorded_scope):
    tk = OrtToolkit()
    be = _backend(tmp_path, irnet, tk, batch=2, input_size=(40, 24))
    assert tk.builds == ["full"] and tk.checked == 1  # before any frame
    x = torch.rand(2, 3, 24, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = irnet(x)
    y = be.run(x)
    assert (y - ref).abs().max().item() < 5e-3 and tk.builds == ["full"]
    assert (be.run(x[:1]) - ref[:1]).abs().max().item() < 5e-3 and tk.builds == ["full"]  # last, short batch
    # statistics and the two-part interface (the tile graph, built when first asked for)
    ctx = be.context(x)
    with torch.no_grad():
        want = irnet.global_context(x)
    assert len(ctx) == len(want) and all(c.dtype == torch.float32 for c in ctx)
    assert max((a - b).abs().max().item() for a, b in zip(ctx, want)) < 5e-3
    assert (be.run_with_context(x, ctx) - ref).abs().max().item() < 5e-3
    # every TensorRT call ran on the backend's device
    assert {dev for _, dev in tk.events} == {"cpu"}


def test_tiled_conversion_builds_the_context_and_tile_engines_up_front(tmp_path, irnet, recorded_scope):
    tk = OrtToolkit()
    be = _backend(tmp_path, irnet, tk, batch=1, input_size=(64, 48), tile=32)
    assert sorted(tk.builds) == ["context", "tile"] and tk.checked == 2
    x = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = irnet(x)
    assert (be.run_tiled(x, 32, 16) - ref).abs().max().item() < 5e-3
    assert sorted(tk.builds) == ["context", "tile"]  # nothing more was built while running


def test_smoothed_statistics_build_the_context_and_tile_engines_up_front(tmp_path, irnet, recorded_scope):
    """With temporal smoothing every batch runs as context + tile engines, even untiled."""
    tk = OrtToolkit()
    be = _backend(tmp_path, irnet, tk, batch=1, input_size=(64, 48), two_part=True)
    assert sorted(tk.builds) == ["context", "tile"]
    x = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = irnet(x)
    assert (be.run_with_context(x, be.context(x)) - ref).abs().max().item() < 5e-3
    assert sorted(tk.builds) == ["context", "tile"]


def test_context_arity_is_computed_once(tmp_path, irnet, monkeypatch):
    from hdrvideo.backends import onnx_export

    calls = []
    real = onnx_export.context_arity
    monkeypatch.setattr(onnx_export, "context_arity", lambda m: calls.append(1) or real(m))
    be = _backend(tmp_path, irnet, OrtToolkit(), batch=1, input_size=(64, 48), tile=32)
    x = torch.rand(1, 3, 48, 64)
    for _ in range(3):
        be.run_tiled(x, 32, 16)
        be.context(x)
    assert len(calls) == 1


def test_build_and_deserialise_run_on_the_requested_gpu(tmp_path, irnet, recorded_scope):
    """--device cuda:1: the builder, runtime and contexts see device 1, not the current device."""
    tk = OrtToolkit()
    be = _backend(tmp_path, irnet, tk, device="cuda:1", prepare=False)
    be.prepare()
    be.build_for(choose_profile(be.manager("full").inputs, 1, (64, 48)))
    kinds = [k for k, _ in tk.events]
    assert "check" in kinds and "build" in kinds
    assert {dev for _, dev in tk.events} == {"cuda:1"}


def test_parse_failure_and_build_errors_fail_at_construction(tmp_path, irnet):
    with pytest.raises(BackendError, match="cannot parse"):
        _backend(tmp_path, irnet, OrtToolkit(fail_check=True))
    oom = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nCUDA kernel errors ...")
    with pytest.raises(BackendError, match="cannot prepare .*out of memory") as err:
        _backend(tmp_path, irnet, OrtToolkit(fail_build=oom), input_size=(64, 48))
    assert "\n" not in str(err.value)


def test_auto_falls_through_when_tensorrt_cannot_build(tmp_path, irnet, monkeypatch, caplog):
    import hdrvideo.backends as backends

    monkeypatch.setattr(backends, "backend_candidates", lambda device=None: [
        ("tensorrt", "cpu", "TensorRT and CUDA GPU present"), ("torch", "cpu", "fallback")])
    monkeypatch.setattr(trb, "load_tensorrt", lambda: types.SimpleNamespace(__version__="10.9.0"))
    monkeypatch.setattr(trb, "require_cuda", lambda device=None: torch.device("cpu"))
    monkeypatch.setattr(trb, "TrtToolkit", lambda trt, device: OrtToolkit(fail_build=MemoryError("out of memory")))
    monkeypatch.setattr(trb.DeviceInfo, "current", classmethod(lambda cls, device, cuda=None: DEV))
    monkeypatch.setenv("HDRVIDEO_CACHE", str(tmp_path))
    with caplog.at_level(logging.WARNING):
        be = backends.create_backend("auto", irnet, "cpu", input_size=(64, 48), batch=1)
    assert be.name == "torch"
    assert any("tensorrt on cpu failed" in r.message and "out of memory" in r.message for r in caplog.records)


def test_tensorrt_is_no_auto_candidate_without_onnx(monkeypatch):
    import hdrvideo.backends as backends

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA Test GPU")
    monkeypatch.setattr(backends, "_has", lambda m: m in ("tensorrt",))
    assert [c[0] for c in backends.backend_candidates("cuda")] == ["torch", "torch"]
    monkeypatch.setattr(backends, "_has", lambda m: m in ("tensorrt", "onnx"))
    assert backends.backend_candidates("cuda")[0][0] == "tensorrt"


def test_tensorrt_extra_is_pinned_to_the_docker_base_images_major():
    """PyPI serves TensorRT 11; the GPU image's base ships 10.x, which pip must keep."""
    import re
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    repo = Path(__file__).resolve().parents[1]
    extras = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    req = next(Requirement(r) for r in extras["tensorrt"] if Requirement(r).name == "tensorrt")
    base = re.search(r"ARG BASE_IMAGE=nvcr.io/nvidia/tensorrt:(\d+)\.(\d+)", (repo / "docker" / "Dockerfile").read_text())
    assert base and (int(base.group(1)), int(base.group(2))) >= (24, 5)  # NGC 24.05+ ships TensorRT 10.x
    assert req.specifier.contains("10.7.0") and not req.specifier.contains("11.0.0")
