"""Eager PyTorch backend: the reference, and the fast path on a GPU.

On CUDA it runs, by default:

* **FP16 with FP32 statistics** (:meth:`~hdrvideo.models.ITMModel.half_with_fp32_statistics`):
  the full-resolution convolutions in FP16, channel means/variances, pooled priors and what is
  computed from them in FP32 — the policy of the FP16 ONNX graphs, so torch, ONNX Runtime and
  TensorRT agree. ``context(x)`` returns those statistics in FP32 and ``run_with_context`` keeps
  them in FP32.
* **channels_last** tensors (NHWC: what cuDNN's FP16 tensor-core convolutions want);
* **CUDA graphs**: the second call with a given input shape captures the forward pass into a
  graph, later calls replay it (one launch instead of one per kernel, so the pass no longer
  competes for the GIL with the decode and encode threads). One-off shapes (the last, shorter
  batch) run eagerly. Inputs are copied into the graph's static buffers and outputs cloned out.
* **cuDNN autotuning** (``torch.backends.cudnn.benchmark``) while the model runs, restored after.

``compile`` (off by default) wraps the model in ``torch.compile`` with that mode
(``"default"``, ``"max-autotune-no-cudagraphs"``, …); if compiling fails the backend says so and
runs eagerly. Every option degrades to plain eager FP32 on a CPU; ``fp16=True`` on a CPU works
(slowly) and is what the CPU tests of the mixed-precision path use.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections import OrderedDict
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .base import Context, TwoPartRunner, whole_or_tiled

log = logging.getLogger(__name__)

__all__ = ["TorchBackend", "CudaGraphCache"]


class CudaGraphCache:
    """Runs ``fn(*tensors)`` through CUDA graphs captured per input shape (see the module docstring).

    A shape is captured on its second call (the first runs eagerly, which also warms cuDNN's
    autotuner); at most ``max_graphs`` graphs are kept, least recently used first out. ``fn``
    must return a tensor or a tuple of tensors and do no host synchronisation.
    """

    def __init__(self, fn: Callable[..., Any], max_graphs: int = 3) -> None:
        self.fn = fn
        self.max_graphs = max_graphs
        self.graphs: OrderedDict[tuple, tuple[Any, list[Tensor], Any]] = OrderedDict()
        self.seen: dict[tuple, int] = {}
        self.captures = 0
        self.disabled = False

    @staticmethod
    def _key(args: tuple[Tensor, ...]) -> tuple:
        return tuple((tuple(a.shape), a.dtype, a.stride(), a.device) for a in args)

    def __call__(self, *args: Tensor):
        if self.disabled:
            return self.fn(*args)
        key = self._key(args)
        entry = self.graphs.get(key)
        if entry is None:
            self.seen[key] = self.seen.get(key, 0) + 1
            if self.seen[key] < 2:
                return self.fn(*args)
            try:
                entry = self._capture(args)
            except Exception as err:  # noqa: BLE001 - a model that cannot be captured runs eagerly
                log.warning("CUDA graph capture failed (%s); running eagerly", str(err).splitlines()[0])
                self.disabled = True
                return self.fn(*args)
            self.graphs[key] = entry
            while len(self.graphs) > self.max_graphs:
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        graph, static_in, static_out = entry
        for dst, src in zip(static_in, args):
            dst.copy_(src)
        graph.replay()
        if isinstance(static_out, tuple):
            return tuple(t.clone() for t in static_out)
        return static_out.clone()

    def _capture(self, args: tuple[Tensor, ...]):
        static_in = [torch.empty_like(a).copy_(a) for a in args]
        side = torch.cuda.Stream(args[0].device)
        side.wait_stream(torch.cuda.current_stream(args[0].device))
        with torch.cuda.stream(side):  # warm-up off the default stream, as torch.cuda.graph requires
            self.fn(*static_in)
        torch.cuda.current_stream(args[0].device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the pipeline's other threads (decoder pinning buffers, light meter
        # uploading planes) keep using CUDA while this thread captures; "global" would fail them
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_out = self.fn(*static_in)
        self.captures += 1
        return graph, static_in, static_out


@contextlib.contextmanager
def _cudnn_benchmark(on: bool):
    if not on:
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


class TorchBackend(TwoPartRunner):
    name = "torch"

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cpu",
        fp16: bool | None = None,
        channels_last: bool | None = None,
        cuda_graphs: bool | None = None,
        compile: str | None = None,
        cudnn_benchmark: bool | None = None,
    ) -> None:
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        self.fp16 = cuda if fp16 is None else bool(fp16)
        self.channels_last = cuda if channels_last is None else bool(channels_last)
        self.cuda_graphs = cuda and (True if cuda_graphs is None else bool(cuda_graphs))
        self.cudnn_benchmark = cuda and (True if cudnn_benchmark is None else bool(cudnn_benchmark))
        self.compile = compile or None
        model = copy.deepcopy(model).eval().to(self.device)  # never cast or move the caller's model
        if self.fp16:
            if hasattr(model, "half_with_fp32_statistics"):
                model.half_with_fp32_statistics(torch.float16)
            else:  # a plain nn.Module: no statistics policy to apply
                model = model.half()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._net: Callable[..., Any] = model
        if self.compile:
            try:
                self._net = torch.compile(model, mode=None if self.compile == "default" else self.compile, dynamic=False)
            except Exception as err:  # noqa: BLE001 - compile is an optimisation, never a requirement
                log.warning("torch.compile(%s) is unavailable (%s); running eagerly", self.compile,
                            str(err).splitlines()[0])
                self.compile = None
        self._compile_checked = False
        self._has_context: bool | None = None
        self._graphs: dict[str, CudaGraphCache] = {}

    # -- helpers ---------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.fp16 else torch.float32

    def describe(self) -> str:
        parts = ["FP16 with FP32 statistics" if self.fp16 else "FP32"]
        if self.channels_last:
            parts.append("channels_last")
        if self.compile:
            parts.append(f"torch.compile({self.compile})")
        if self.cuda_graphs:
            parts.append("CUDA graphs")
        return f"torch {torch.__version__} ({', '.join(parts)})"

    def _prepare(self, x: Tensor) -> Tensor:
        x = x.to(self.device, non_blocking=True)
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _call(self, kind: str, *args: Tensor):
        """``self._<kind>_fn(*args)``, through a CUDA graph when enabled.

        A compiled model that fails on its first call (no C++ compiler or Triton here, an
        unsupported op) is dropped for the eager one, once, with a warning.
        """
        fn = getattr(self, f"_{kind}_fn")
        with _cudnn_benchmark(self.cudnn_benchmark):
            if self.compile and not self._compile_checked:
                self._compile_checked = True
                try:
                    return fn(*args)
                except Exception as err:  # noqa: BLE001
                    log.warning("torch.compile(%s) failed (%s); running eagerly", self.compile,
                                str(err).splitlines()[0])
                    self.compile = None
                    self._net = self.model
            if not self.cuda_graphs:
                return fn(*args)
            if kind not in self._graphs:
                self._graphs[kind] = CudaGraphCache(fn)
            return self._graphs[kind](*args)

    def _run_fn(self, x: Tensor) -> Tensor:
        return self._net(x)

    def _context_fn(self, x: Tensor):
        return tuple(self.model.global_context(x))

    def _tile_fn(self, x: Tensor, *ctx: Tensor) -> Tensor:
        return self._net(x, context=tuple(ctx))

    # -- the Backend interface ---------------------------------------------------------------
    @torch.inference_mode()
    def run(self, x: Tensor) -> Tensor:
        return self._call("run", self._prepare(x)).to(x.dtype)

    @torch.inference_mode()
    def context(self, x: Tensor, tile: int = 0) -> Context:
        """The model's image-level statistics of each frame (``model.global_context``), FP32;
        with ``tile``, its local layers in tiles of that size (bounded memory, same result)."""
        xp = self._prepare(x)
        if self._has_context is None:  # once, eagerly: does this model have statistics at all?
            self._has_context = getattr(self.model, "global_context", None) is not None and \
                self.model.global_context(xp[:1, :, :16, :16]) is not None
        if not self._has_context:
            return None
        if tile:
            return tuple(c.float() for c in self.model.global_context(xp, tile=tile))
        return tuple(c.float() for c in self._call("context", xp))

    @torch.inference_mode()
    def run_with_context(self, x: Tensor, context: Context, tile: int = 0, overlap: int = 16) -> Tensor:
        """The model with fixed statistics (kept in FP32), on the whole frame or in blended tiles."""
        xp = self._prepare(x)
        if context is None:
            def fn(t: Tensor) -> Tensor:
                return self._call("run", t)
        else:
            ctx = tuple(c.to(self.device, torch.float32) for c in context)

            def fn(t: Tensor) -> Tensor:
                if self.channels_last:
                    t = t.contiguous(memory_format=torch.channels_last)
                return self._call("tile", t, *ctx)

        return whole_or_tiled(fn, xp, self.model, tile, overlap).to(x.dtype)

