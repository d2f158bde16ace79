"""ONNX Runtime backend: the exported graph on the CPU EP (CI) or the CUDA/TensorRT EPs (GPU hosts).

* The graph comes from the export cache (:func:`~.onnx_export.cached_onnx`), keyed by the
  weights' digest, the architecture, the opset and the precision.
* On CUDA the FP16 graph (:mod:`.fp16`, statistics in FP32) runs by default; I/O is bound to torch
  CUDA tensors with IOBinding, so frames never leave the device.
* ORT silently falls back to the CPU EP when a GPU provider fails to load (missing cuDNN, driver
  mismatch); :class:`OnnxRuntimeBackend` checks ``session.get_providers()`` after creating the
  session and says so loudly — or raises :class:`~hdrvideo.errors.BackendError` when
  ``strict=True`` (what ``--backend auto`` uses, so it can move on to the next backend).
* CPU threads: ``threads`` intra-op threads (default: every core — the decode, encode and
  metering threads run at a lower priority, so they take what the model leaves idle), one
  inter-op thread, and spinning disabled, so idle ORT workers do not burn the cores that decode
  and x265 need while the stages overlap.
* Tiling (``run_tiled``) is exact, as with torch: a *context* graph computes the model's
  image-level statistics on the whole frame once, and a *tile* graph runs every tile with them.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import BackendError
from .base import TwoPartRunner, whole_or_tiled

__all__ = ["OnnxRuntimeBackend", "ort_available", "gpu_providers_available"]

log = logging.getLogger(__name__)

_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendError("the onnxruntime backend needs the 'onnxruntime' package: pip install 'hdrvideo[onnx]' "
                           "(onnxruntime-gpu on CUDA hosts)") from None
    return ort


def ort_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True


def gpu_providers_available() -> list[str]:
    """GPU execution providers this onnxruntime build offers (loading them may still fail)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return [p for p in ort.get_available_providers() if p in _GPU_PROVIDERS]


class OnnxRuntimeBackend(TwoPartRunner):
    """Runs an exported graph with ONNX Runtime; see the module docstring."""

    name = "onnxruntime"

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cpu",
        *,
        fp16: bool | None = None,
        threads: int | None = None,
        providers: list[str] | None = None,
        strict: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        onnx_path: str | os.PathLike[str] | None = None,
        opset: int | None = None,
        trt_ep: bool = False,
    ) -> None:
        self._ort = _import_ort()
        from .onnx_export import OPSET, cached_onnx

        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
        self.fp16 = (self.device.type == "cuda") if fp16 is None else bool(fp16)
        self.threads = threads
        self.strict = strict
        self.cache_dir = cache_dir
        self.opset = opset or OPSET
        self.model = model.eval()
        self.scale = int(getattr(model, "scale", 1))
        self._cached_onnx = cached_onnx
        if providers is None:
            providers = self._default_providers(trt_ep)
        self.providers_requested = list(providers)
        path = onnx_path or cached_onnx(model, "full", self.opset, self.fp16, cache_dir)
        self.onnx_path = str(path)
        self.session = self._session(self.onnx_path)
        self._tile_sessions: tuple | None = None

    # -- sessions --------------------------------------------------------------------------
    def _default_providers(self, trt_ep: bool) -> list:
        if self.device.type != "cuda":
            return ["CPUExecutionProvider"]
        idx = self.device.index or 0
        provs: list = []
        if trt_ep:
            provs.append(("TensorrtExecutionProvider", {"device_id": idx, "trt_fp16_enable": False}))
        provs.append(("CUDAExecutionProvider", {"device_id": idx}))
        provs.append("CPUExecutionProvider")
        return provs

    def _options(self):
        ort = self._ort
        so = ort.SessionOptions()
        # default: every core; the decode/encode/meter threads are niced below the model's
        threads = self.threads if self.threads is not None else max(1, os.cpu_count() or 1)
        so.intra_op_num_threads = max(1, int(threads))
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle workers must sleep, not spin: decode and x265 share these cores
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        return so

    def _session(self, path: str):
        ort = self._ort
        try:
            sess = ort.InferenceSession(path, self._options(), providers=self.providers_requested)
        except Exception as err:  # noqa: BLE001 - ORT raises several unrelated types
            raise BackendError(f"onnxruntime cannot load {os.path.basename(path)}: {str(err).splitlines()[0]}") from err
        got = sess.get_providers()
        wanted_gpu = [p if isinstance(p, str) else p[0] for p in self.providers_requested]
        wanted_gpu = [p for p in wanted_gpu if p in _GPU_PROVIDERS]
        if wanted_gpu and not any(p in got for p in wanted_gpu):
            msg = (f"onnxruntime fell back to the CPU: requested {', '.join(wanted_gpu)} but the session runs on "
                   f"{', '.join(got)} (is onnxruntime-gpu installed with matching CUDA/cuDNN libraries?)")
            if self.strict:
                raise BackendError(msg)
            log.warning("!!! %s — running on the CPU, expect it to be very slow", msg)
            self.device = torch.device("cpu")
            self.providers_requested = ["CPUExecutionProvider"]
        self.providers = got
        return sess

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    # -- running ---------------------------------------------------------------------------
    def _run_session(self, sess, feeds: dict[str, Tensor], out_shapes: dict[str, tuple[int, ...]]) -> list[Tensor]:
        if not self.on_gpu:
            arrays = {k: np.ascontiguousarray(v.detach().to("cpu", torch.float32).numpy()) for k, v in feeds.items()}
            outs = sess.run(list(out_shapes), arrays)
            return [torch.from_numpy(np.asarray(o, dtype=np.float32)) for o in outs]
        # GPU: bind torch CUDA tensors directly (no host round trip)
        binding = sess.io_binding()
        idx = self.device.index or 0
        keep = []
        for k, v in feeds.items():
            v = v.to(self.device, torch.float32).contiguous()
            keep.append(v)
            binding.bind_input(k, "cuda", idx, np.float32, tuple(v.shape), v.data_ptr())
        outs = []
        for k, shape in out_shapes.items():
            y = torch.empty(shape, dtype=torch.float32, device=self.device)
            binding.bind_output(k, "cuda", idx, np.float32, tuple(y.shape), y.data_ptr())
            outs.append(y)
        torch.cuda.current_stream(self.device).synchronize()  # inputs written by torch kernels
        sess.run_with_iobinding(binding)
        return outs

    @torch.inference_mode()
    def run(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        (y,) = self._run_session(self.session, {"x": x}, {"y": (n, 3, h * self.scale, w * self.scale)})
        return y.to(device=x.device if not self.on_gpu else self.device, dtype=x.dtype)

    def _tiling_sessions(self):
        if self._tile_sessions is None:
            from .onnx_export import context_arity

            k = context_arity(self.model)
            if k == 0:
                self._tile_sessions = (None, None, 0)
            else:
                ctx_path = self._cached_onnx(self.model, "context", self.opset, self.fp16, self.cache_dir)
                tile_path = self._cached_onnx(self.model, "tile", self.opset, self.fp16, self.cache_dir)
                self._tile_sessions = (self._session(str(ctx_path)), self._session(str(tile_path)), k)
        return self._tile_sessions

    @torch.inference_mode()
    def context(self, x: Tensor, tile: int = 0) -> tuple[Tensor, ...] | None:
        """The model's image-level statistics of ``x`` (through the context graph).

        With ``tile`` on the CPU, the same FP32 statistics come from the model itself with its
        local layers in tiles (``global_context(tile=…)``): the context graph would hold the
        whole frame's intermediates at once, which is what tiling is there to avoid.
        """
        ctx_sess, _, k = self._tiling_sessions()
        if ctx_sess is None:
            return None
        if tile and not self.on_gpu:
            ctx = self.model.global_context(x.to("cpu", torch.float32), tile=tile)
            return tuple(c.float() for c in ctx)
        shapes = {o.name: tuple(x.shape[0] if isinstance(d, str) or d is None else d for d in o.shape)
                  for o in ctx_sess.get_outputs()}
        return tuple(self._run_session(ctx_sess, {"x": x}, shapes))

    @torch.inference_mode()
    def run_with_context(self, x: Tensor, context: tuple[Tensor, ...] | None, tile: int = 0, overlap: int = 16) -> Tensor:
        """The tile graph with fixed statistics, on the whole frame or in blended tiles."""
        if context is None:
            fn = self.run
        else:
            _, tile_sess, _ = self._tiling_sessions()
            feeds_ctx = {f"ctx{i}": c for i, c in enumerate(context)}

            def fn(t: Tensor) -> Tensor:
                n, _, th, tw = t.shape
                (y,) = self._run_session(tile_sess, {"x": t, **feeds_ctx}, {"y": (n, 3, th * self.scale, tw * self.scale)})
                return y.to(device=t.device if not self.on_gpu else self.device, dtype=t.dtype)

        return whole_or_tiled(fn, x, self.model, tile, overlap)


    def describe(self) -> str:
        prec = "FP16 graph" if self.fp16 else "FP32"
        return f"onnxruntime {self._ort.__version__} ({', '.join(self.providers)}, {prec})"
