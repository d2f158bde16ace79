"""Backend selection (auto), the ORT provider-fallback check, and torch vs ORT through `convert`."""

from __future__ import annotations

import logging

import pytest
import torch

from hdrvideo import models
from hdrvideo.backends import BACKENDS, backend_candidates, choose_backend, create_backend
from hdrvideo.errors import BackendError

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HDRVIDEO_CACHE", str(tmp_path_factory.getbasetemp() / "select-cache"))


def test_registry_and_auto_on_a_cpu_machine(caplog):
    assert set(BACKENDS) == {"torch", "onnxruntime", "tensorrt"}
    if torch.cuda.is_available():
        pytest.skip("CPU-machine expectations")
    name, why = choose_backend()
    assert name == "onnxruntime" and "no CUDA GPU" in why
    assert [c[0] for c in backend_candidates("cpu")] == ["onnxruntime", "torch"]
    model = models.create("irnet-1-48").eval()
    with caplog.at_level(logging.INFO, logger="hdrvideo.backends"):
        be = create_backend("auto", model, None, threads=1)
    assert be.name == "onnxruntime"
    assert any("backend auto → onnxruntime" in r.message for r in caplog.records)
    with pytest.raises(BackendError, match="unknown backend"):
        create_backend("nope", model, "cpu")


def test_auto_moves_on_when_a_candidate_fails(monkeypatch, caplog):
    import hdrvideo.backends as b

    monkeypatch.setattr(b, "backend_candidates", lambda device=None: [
        ("tensorrt", "cuda", "pretend GPU"), ("torch", "cpu", "fallback")])
    model = models.create("irnet-1-48").eval()
    with caplog.at_level(logging.WARNING):
        be = create_backend("auto", model, None)
    assert be.name == "torch"
    assert any("tensorrt on cuda failed" in r.message for r in caplog.records)


class _FakeSession:
    """An InferenceSession that 'loaded' only the CPU provider (ORT's silent fallback)."""

    def __init__(self, path, options, providers=None):
        self.requested = providers

    def get_providers(self):
        return ["CPUExecutionProvider"]


def test_silent_cpu_fallback_is_loud_or_an_error(monkeypatch, caplog):
    from hdrvideo.backends.onnxruntime_backend import OnnxRuntimeBackend

    monkeypatch.setattr(ort, "InferenceSession", _FakeSession)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = models.create("irnet-1-48").eval()
    with pytest.raises(BackendError, match="fell back to the CPU"):
        OnnxRuntimeBackend(model, "cuda:0", strict=True)
    with caplog.at_level(logging.WARNING):
        be = OnnxRuntimeBackend(model, "cuda:0")
    assert be.device.type == "cpu"
    assert any("fell back to the CPU" in r.message for r in caplog.records)


def test_torch_backend_threads_option_is_dropped_not_fatal():
    model = models.create("irnet-1-48").eval()
    be = create_backend("torch", model, "cpu", threads=1)  # only onnxruntime takes threads
    assert be.name == "torch"


def test_neural_processor_tiles_exactly_with_onnxruntime():
    from hdrvideo.processors.neural import NeuralProcessor

    torch.manual_seed(0)
    model = models.create("irnet-2").eval()
    be = create_backend("onnxruntime", model, "cpu", threads=1, fp16=False)
    proc = NeuralProcessor(be, scale=1, tile=24, overlap=16)
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        ref = model(x)
    assert (proc(x) - ref).abs().max().item() <= 1e-4
