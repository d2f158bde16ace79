"""TensorRT backend logic that needs no GPU: profiles, keys, the engine cache, stale rebuilds.

The builder/runtime are replaced by a fake toolkit; the real ones run only in the tests marked
``tensorrt`` (skipped without TensorRT and a CUDA GPU).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time

import pytest
import torch

from hdrvideo.backends.engine_cache import EngineCache, atomic_write_bytes, cache_root, key_digest
from hdrvideo.backends.tensorrt_backend import (
    BuilderOptions,
    DeviceInfo,
    EngineManager,
    Profile,
    choose_profile,
    engine_key,
    load_tensorrt,
    preset_profile,
    require_cuda,
)
from hdrvideo.errors import BackendError

INPUTS = {"x": ["n", 3, "h", "w"]}
DEV = DeviceInfo("NVIDIA Test GPU", "8.9", "12.4")


class FakeEngine:
    def __init__(self, data: bytes) -> None:
        self.data = data


class FakeToolkit:
    """Builds 'engines' that are just a header + the profile; refuses other versions' engines."""

    def __init__(self, version: str = "10.9.0", build_seconds: float = 0.0) -> None:
        self.version = version
        self.builds = 0
        self.timing_seen: list[bytes] = []
        self.build_seconds = build_seconds

    def build(self, onnx_bytes, profile, options, timing_cache):
        self.builds += 1
        self.timing_seen.append(timing_cache)
        time.sleep(self.build_seconds)
        engine = f"ENGINE {self.version} ".encode() + json.dumps(profile.as_dict()).encode()
        return engine, timing_cache + b"T"

    def deserialize(self, data: bytes):
        if not data.startswith(f"ENGINE {self.version} ".encode()):
            return None  # what TensorRT does for another version's or a corrupt plan
        return FakeEngine(data)


def manager(tmp_path, toolkit=None, onnx=b"graph", fp16=None, device=DEV, options=None):
    return EngineManager(toolkit or FakeToolkit(), EngineCache(tmp_path), onnx, fp16 or {"version": 1}, device,
                         options or BuilderOptions(), name="irnet-5-x4-full", inputs=INPUTS)


# -- profiles ------------------------------------------------------------------------------


def test_choose_profile_tight_by_default_and_ranges():
    p = choose_profile(INPUTS, 4, (960, 540))
    assert p.shapes == (("x", (1, 3, 540, 960), (4, 3, 540, 960), (4, 3, 540, 960)),)
    assert p.covers({"x": (2, 3, 540, 960)}) and not p.covers({"x": (5, 3, 540, 960)})
    assert not p.covers({"x": (1, 3, 544, 960)}) and not p.covers({"y": (1, 3, 540, 960)})
    r = choose_profile(INPUTS, 2, (640, 360), (960, 540), (32, 32))
    assert r.shapes[0][1] == (1, 3, 32, 32) and r.shapes[0][3] == (2, 3, 540, 960)
    with pytest.raises(BackendError):
        choose_profile(INPUTS, 2, (1000, 540), (960, 540))
    with pytest.raises(BackendError):
        choose_profile(INPUTS, 0, (960, 540))


def test_profile_with_context_inputs_and_roundtrip():
    ins = {"x": ["n", 3, "h", "w"], "ctx0": ["n", 64, 1, 1], "ctx1": ["n", 12]}
    p = choose_profile(ins, 2, (256, 256))
    table = {name: (mn, op, mx) for name, mn, op, mx in p.shapes}
    assert table["ctx0"] == ((1, 64, 1, 1), (2, 64, 1, 1), (2, 64, 1, 1))
    assert table["ctx1"] == ((1, 12), (2, 12), (2, 12))
    assert Profile.from_dict(p.as_dict()) == p


def test_preset_profile_covers_the_preset_sizes():
    # sr4-itm: 960×540 → 3840×2160; anything from 32×32 up to 960×540 runs on one engine
    p = preset_profile(INPUTS, 1, (3840, 2160), 4)
    assert p.shapes[0][3] == (1, 3, 540, 960) and p.shapes[0][1] == (1, 3, 32, 32)
    for shape in [(1, 3, 540, 960), (1, 3, 360, 640), (1, 3, 136, 240)]:
        assert p.covers({"x": shape})
    assert preset_profile(INPUTS, 2, (3840, 2160), 2).shapes[0][3] == (2, 3, 1080, 1920)


# -- keys ----------------------------------------------------------------------------------


def test_engine_key_covers_every_field():
    prof = choose_profile(INPUTS, 1, (960, 540))
    base = engine_key("abc", {"version": 1}, "10.9.0", DEV, prof, BuilderOptions())
    variants = [
        engine_key("abd", {"version": 1}, "10.9.0", DEV, prof, BuilderOptions()),
        engine_key("abc", {"version": 2}, "10.9.0", DEV, prof, BuilderOptions()),
        engine_key("abc", {"version": 1}, "11.0.0", DEV, prof, BuilderOptions()),
        engine_key("abc", {"version": 1}, "10.9.0", DeviceInfo("Other GPU", "8.9", "12.4"), prof, BuilderOptions()),
        engine_key("abc", {"version": 1}, "10.9.0", DeviceInfo(DEV.gpu, "9.0", "12.4"), prof, BuilderOptions()),
        engine_key("abc", {"version": 1}, "10.9.0", DeviceInfo(DEV.gpu, "8.9", "12.8"), prof, BuilderOptions()),
        engine_key("abc", {"version": 1}, "10.9.0", DEV, choose_profile(INPUTS, 2, (960, 540)), BuilderOptions()),
        engine_key("abc", {"version": 1}, "10.9.0", DEV, prof, BuilderOptions(strongly_typed=False)),
    ]
    digests = {key_digest(base)} | {key_digest(v) for v in variants}
    assert len(digests) == len(variants) + 1
    assert key_digest(base) == key_digest(json.loads(json.dumps(base)))  # stable through JSON
    # how long a build takes or how fast the engine is does not decide whether it can be used
    for opts in (BuilderOptions(workspace_mib=1024), BuilderOptions(optimization_level=5)):
        assert engine_key("abc", {"version": 1}, "10.9.0", DEV, prof, opts) == base


def test_cache_root_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("HDRVIDEO_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("HDRVIDEO_CACHE")
    assert cache_root().name == "hdrvideo"


# -- the engine cache with a fake builder -------------------------------------------------------


def test_build_once_then_load_from_cache_with_sidecar(tmp_path):
    tk = FakeToolkit()
    prof = choose_profile(INPUTS, 1, (240, 136))
    eng, path, built = manager(tmp_path, tk).engine(prof)
    assert built and tk.builds == 1 and isinstance(eng, FakeEngine)
    side = json.loads(path.with_suffix(".engine.json").read_text())
    assert side["key"]["tensorrt"] == "10.9.0" and side["key"]["gpu"] == DEV.gpu
    assert side["key"]["profile"]["x"]["max"] == [1, 3, 136, 240] and side["size"] == path.stat().st_size
    # a new process (new manager) finds it
    tk2 = FakeToolkit()
    _, path2, built2 = manager(tmp_path, tk2).engine(prof)
    assert path2 == path and not built2 and tk2.builds == 0
    # the timing cache was saved and fed to the next build
    manager(tmp_path, tk2).engine(choose_profile(INPUTS, 2, (240, 136)))
    assert tk2.timing_seen == [b"T"]


def test_stale_engine_from_another_tensorrt_is_rebuilt_with_a_warning(tmp_path, caplog):
    prof = choose_profile(INPUTS, 1, (240, 136))
    _, path, _ = manager(tmp_path, FakeToolkit("10.9.0")).engine(prof)
    # same key file, but the plan inside no longer deserializes (e.g. driver/TRT update in place)
    path.write_bytes(b"ENGINE 9.0.0 old plan")
    side = path.with_suffix(".engine.json")
    meta = json.loads(side.read_text())
    meta.pop("sha256")
    side.write_text(json.dumps(meta))
    tk = FakeToolkit("10.9.0")
    with caplog.at_level(logging.WARNING):
        eng, path2, built = manager(tmp_path, tk).engine(prof)
    assert built and tk.builds == 1 and path2 == path and eng.data.startswith(b"ENGINE 10.9.0")
    assert any("unusable" in r.message and "deserialize" in r.message for r in caplog.records)


def test_corrupt_or_keyless_engine_is_rebuilt(tmp_path, caplog):
    prof = choose_profile(INPUTS, 1, (240, 136))
    _, path, _ = manager(tmp_path).engine(prof)
    path.write_bytes(path.read_bytes()[:-5])  # truncated: checksum mismatch
    tk = FakeToolkit()
    with caplog.at_level(logging.WARNING):
        _, _, built = manager(tmp_path, tk).engine(prof)
    assert built and any("checksum" in r.message for r in caplog.records)
    path.with_suffix(".engine.json").unlink()  # sidecar lost
    tk = FakeToolkit()
    _, _, built = manager(tmp_path, tk).engine(prof)
    assert built and tk.builds == 1


def test_a_new_tensorrt_version_gets_its_own_engine(tmp_path):
    prof = choose_profile(INPUTS, 1, (240, 136))
    _, p10, _ = manager(tmp_path, FakeToolkit("10.9.0")).engine(prof)
    _, p11, built = manager(tmp_path, FakeToolkit("11.1.0")).engine(prof)
    assert built and p10 != p11 and p10.exists() and p11.exists()


def test_build_failure_is_one_line_error_and_leaves_no_file(tmp_path):
    class Failing(FakeToolkit):
        def build(self, *a):
            raise BackendError("TensorRT cannot parse the ONNX graph: unsupported op")

    m = manager(tmp_path, Failing())
    with pytest.raises(BackendError, match="cannot parse"):
        m.engine(choose_profile(INPUTS, 1, (64, 64)))
    assert not list((tmp_path / "engines").glob("*.engine"))


def test_concurrent_builders_build_once(tmp_path):
    """Two jobs wanting the same engine: one builds under the lock, the other loads its result."""
    tk = FakeToolkit(build_seconds=0.3)
    prof = choose_profile(INPUTS, 1, (240, 136))
    results = []

    def job():
        results.append(manager(tmp_path, tk).engine(prof)[2])

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tk.builds == 1 and sorted(results) == [False, True]
    assert not list((tmp_path / "engines").glob(".*.tmp"))  # no temporary files left behind


def test_find_covering_picks_the_tightest_matching_engine(tmp_path):
    tk = FakeToolkit()
    m = manager(tmp_path, tk)
    wide = preset_profile(INPUTS, 1, (3840, 2160), 4)  # up to 960×540
    tight = choose_profile(INPUTS, 1, (240, 136))
    m.engine(wide)
    assert m.find_covering({"x": (1, 3, 136, 240)}) == wide
    m.engine(tight)
    assert m.find_covering({"x": (1, 3, 136, 240)}) == tight
    assert m.find_covering({"x": (1, 3, 1080, 1920)}) is None
    # another GPU's engines never match
    assert manager(tmp_path, tk, device=DeviceInfo("Other", "7.5", "12.4")).find_covering({"x": (1, 3, 136, 240)}) is None
    # nor another graph's
    assert manager(tmp_path, tk, onnx=b"other graph").find_covering({"x": (1, 3, 136, 240)}) is None


def test_list_and_clear(tmp_path):
    cache = EngineCache(tmp_path)
    manager(tmp_path).engine(choose_profile(INPUTS, 1, (64, 64)))
    atomic_write_bytes(tmp_path / "onnx" / "a.onnx", b"x")
    kinds = sorted(e.kind for e in cache.entries())
    assert kinds == ["engine", "unknown (no sidecar)"]
    assert cache.clear() == 2  # the engine and the timing cache, not ONNX
    assert [e.path.name for e in cache.entries()] == ["a.onnx"]
    assert not list(cache.timing_dir.glob("*.timing"))
    assert cache.clear(onnx=True) == 1 and cache.entries() == []


# -- without TensorRT / GPU ------------------------------------------------------------------


def test_missing_tensorrt_or_gpu_are_one_line_backend_errors():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendError, match="TensorRT is not installed"):
            load_tensorrt()
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="NVIDIA GPU"):
            require_cuda("cuda")
    with pytest.raises(BackendError, match="CUDA device"):
        require_cuda("cpu")


def test_engine_build_cli_without_tensorrt_exits_with_one_line(tmp_path):
    try:
        import tensorrt  # noqa: F401

        if torch.cuda.is_available():
            pytest.skip("TensorRT and a GPU are present")
    except ImportError:
        pass
    proc = subprocess.run([sys.executable, "-m", "hdrvideo.cli", "engine", "build", "--preset", "sr4-itm"],
                          capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                                           "HDRVIDEO_CACHE": str(tmp_path)})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "TensorRT" in lines[0] or "GPU" in lines[0]


def test_backend_with_fake_toolkit_picks_covering_profile(tmp_path):
    """The backend's profile choice: a prebuilt range engine is reused, else an exact one."""
    pytest.importorskip("onnx")
    from hdrvideo import models
    from hdrvideo.backends.tensorrt_backend import TensorRTBackend

    model = models.create("irnet-1-48").eval()
    be = TensorRTBackend(model, "cpu", toolkit=FakeToolkit(), device_info=DEV, cache_dir=tmp_path, batch=2)
    mgr = be.manager("full")
    assert mgr.inputs["x"] == ["n", 3, "h", "w"]
    exact = be.profile_for("full", {"x": (2, 3, 136, 240)})
    assert exact.shapes[0][2] == (2, 3, 136, 240) and exact.shapes[0][1] == (1, 3, 136, 240)
    be.build_for(preset_profile(mgr.inputs, 2, (3840, 2160), 1, (480, 272)))
    reused = be.profile_for("full", {"x": (1, 3, 136, 240)})
    assert reused.shapes[0][3] == (2, 3, 272, 480)


# -- on a GPU with TensorRT ------------------------------------------------------------------


def _trt_ready() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(not _trt_ready(), reason="needs TensorRT and a CUDA GPU")
def test_tensorrt_fp16_engine_matches_torch(tmp_path):  # pragma: no cover - GPU only
    from hdrvideo import models
    from hdrvideo.backends import create_backend

    torch.manual_seed(0)
    model = models.create("irnet-5-x4").eval()
    x = torch.rand(2, 3, 68, 120, device="cuda")
    be = create_backend("tensorrt", model, "cuda", cache_dir=tmp_path, batch=2)
    y = be.run(x)
    with torch.no_grad():
        ref = model.cuda()(x)
    assert y.shape == ref.shape and (y - ref).abs().max().item() < 5e-3
    be2 = create_backend("tensorrt", model, "cuda", cache_dir=tmp_path, batch=2)
    assert (be2.run(x) - y).abs().max().item() == 0  # loaded from the cache, same engine
    tiled = be.run_tiled(x, 48, 16)
    assert (tiled - ref).abs().max().item() < 5e-3
