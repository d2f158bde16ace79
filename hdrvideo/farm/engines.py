"""Execution engines for farm work: a local process pool (the default) and Ray.

Both run ``fn(item, progress)`` for each item and yield :class:`TaskResult` s as tasks finish.
``fn`` must be a module-level function (it is sent to other processes by reference) and
``progress(payload)`` forwards a small picklable payload to the driver's ``on_progress``.

* :class:`LocalEngine` — ``workers`` spawned processes (never forked: torch, CUDA and PyAV
  threads do not survive a fork), each running one task at a time. A worker that dies
  (SIGKILL, out of memory, segfault in a native library) fails only the task it was running,
  with :class:`WorkerDied`, and is replaced. ``workers=1`` with ``in_process=True`` runs the
  tasks one after the other in this process. Several GPUs on one machine: worker *k* sees
  only GPU ``gpu_ids[k % len(gpu_ids)]`` (``CUDA_VISIBLE_DEVICES``).
* :class:`RayEngine` — each item is a Ray task declaring ``num_gpus`` (fractional allowed) and
  ``num_cpus``; progress comes back through a :class:`ray.util.queue.Queue`. Ray is optional
  (``pip install hdrvideo[ray]``).
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

from ..errors import HdrvideoError, UsageError

__all__ = [
    "TaskResult",
    "WorkerDied",
    "RemoteError",
    "Engine",
    "LocalEngine",
    "RayEngine",
    "make_engine",
    "ray_available",
]

log = logging.getLogger(__name__)

ProgressFn = Callable[[Any], None]
TaskFn = Callable[[Any, ProgressFn], Any]


class WorkerDied(HdrvideoError):
    """The process running a task ended without returning (killed, out of memory, crash)."""


class RemoteError(HdrvideoError):
    """A task raised an exception that could not be sent back as itself."""


@dataclass
class TaskResult:
    index: int
    ok: bool
    value: Any = None
    error: BaseException | None = None


class Engine(Protocol):
    name: str

    def run(
        self,
        fn: TaskFn,
        items: list[Any],
        *,
        on_progress: Callable[[int, Any], None] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> Iterator[TaskResult]: ...

    def close(self) -> None: ...


def _no_progress(_payload: Any) -> None:
    pass


def _portable_error(err: BaseException) -> BaseException:
    """``err`` if it survives pickling, else a :class:`RemoteError` with the same one-line text."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001
        msg = str(err).splitlines()[0] if str(err) else ""
        out = RemoteError(f"{type(err).__name__}: {msg}")
        out.exit_code = getattr(err, "exit_code", 1)  # type: ignore[attr-defined]
        return out


# --------------------------------------------------------------------------------------
# Local process pool
# --------------------------------------------------------------------------------------


def _worker_main(conn, env: dict[str, str]) -> None:
    """Body of a spawned worker: receive (task id, fn, item), send progress and the outcome."""
    os.environ.update(env)

    def on_term(signum, frame):  # noqa: ARG001 - clean up temp files like Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if msg is None:
            return
        task_id, fn, item = msg

        def progress(payload: Any, _tid: int = task_id) -> None:
            try:
                conn.send(("progress", _tid, payload))
            except (OSError, ValueError):
                pass

        try:
            value = fn(item, progress)
            conn.send(("done", task_id, value))
        except KeyboardInterrupt:
            return
        except BaseException as err:  # noqa: BLE001 - sent back to the driver
            log.debug("task %s failed:\n%s", task_id, traceback.format_exc())
            try:
                conn.send(("error", task_id, _portable_error(err)))
            except (OSError, ValueError):
                return


class _Worker:
    def __init__(self, ctx, slot: int, env: dict[str, str]) -> None:
        self.slot = slot
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child, env), name=f"hdrvideo-worker-{slot}",
                                   daemon=True)
        # the child's environment from its first instruction (torch reads OMP_NUM_THREADS on
        # import, which happens before _worker_main runs)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            self.process.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        child.close()
        self.task: int | None = None

    def stop(self, timeout: float = 5.0) -> None:
        """Idle: ask it to exit. Busy: SIGTERM (→ KeyboardInterrupt, temp files removed), then kill."""
        if self.task is None:
            try:
                self.conn.send(None)
            except (OSError, ValueError):
                pass
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1.0)
        self.conn.close()


def _death_reason(exitcode: int | None) -> str:
    if exitcode is None:
        return "worker process vanished"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (killed; out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"worker process died from {name}{hint}"
    return f"worker process exited with code {exitcode}"


class LocalEngine:
    """A pool of spawned worker processes on this machine (see the module docstring)."""

    name = "local"

    def __init__(self, workers: int = 1, *, in_process: bool | None = None, gpu_ids: list[int] | None = None,
                 threads_per_worker: int | None = None) -> None:
        if workers < 1:
            raise UsageError("--workers must be ≥ 1")
        self.workers = int(workers)
        self.in_process = (self.workers == 1) if in_process is None else bool(in_process)
        if self.in_process and self.workers != 1:
            raise UsageError("in-process execution runs one task at a time (workers=1)")
        self.gpu_ids = list(gpu_ids or [])
        self.threads_per_worker = threads_per_worker
        self.pids: list[int] = []  # live worker pids (tests kill one)

    def _env(self, slot: int) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.gpu_ids:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpu_ids[slot % len(self.gpu_ids)])
        if self.threads_per_worker:
            for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                env.setdefault(key, os.environ.get(key, str(self.threads_per_worker)))
        return env

    def run(self, fn: TaskFn, items: list[Any], *, on_progress=None, on_start=None) -> Iterator[TaskResult]:
        if self.in_process:
            yield from self._run_here(fn, items, on_progress, on_start)
        else:
            yield from self._run_pool(fn, items, on_progress, on_start)

    def _run_here(self, fn, items, on_progress, on_start) -> Iterator[TaskResult]:
        for i, item in enumerate(items):
            if on_start:
                on_start(i)
            progress = (lambda payload, _i=i: on_progress(_i, payload)) if on_progress else _no_progress
            try:
                value = fn(item, progress)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as err:  # noqa: BLE001
                yield TaskResult(i, False, error=err)
                continue
            yield TaskResult(i, True, value=value)

    def _run_pool(self, fn, items, on_progress, on_start) -> Iterator[TaskResult]:
        import multiprocessing as mp
        from multiprocessing.connection import wait

        ctx = mp.get_context("spawn")
        todo = list(range(len(items)))
        todo.reverse()
        n = min(self.workers, len(items))
        workers: list[_Worker] = []
        try:
            for slot in range(n):
                workers.append(_Worker(ctx, slot, self._env(slot)))
            self.pids = [w.process.pid for w in workers]
            remaining = len(items)
            while remaining:
                for k, w in enumerate(workers):
                    if w.task is None and todo and not w.process.is_alive():
                        w.conn.close()
                        workers[k] = w = _Worker(ctx, w.slot, self._env(w.slot))
                        self.pids = [x.process.pid for x in workers]
                    if w.task is None and todo:
                        i = todo.pop()
                        w.task = i
                        if on_start:
                            on_start(i)
                        try:
                            w.conn.send((i, fn, items[i]))
                        except (OSError, ValueError):
                            pass  # the worker is dead; its sentinel reports it below
                busy = [w for w in workers if w.task is not None]
                if not busy:
                    break
                ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=1.0)
                for w in list(busy):
                    got_message = False
                    if w.conn in ready:
                        try:
                            while w.conn.poll():
                                kind, tid, payload = w.conn.recv()
                                got_message = True
                                if kind == "progress":
                                    if on_progress and tid == w.task:
                                        on_progress(tid, payload)
                                    continue
                                w.task = None
                                remaining -= 1
                                yield TaskResult(tid, kind == "done", value=payload if kind == "done" else None,
                                                 error=None if kind == "done" else payload)
                                break
                        except (EOFError, OSError):
                            pass
                    if w.task is not None and not w.process.is_alive() and not got_message:
                        # died mid-task: fail that task only, replace the worker
                        w.process.join(0.1)
                        tid = w.task
                        w.task = None
                        remaining -= 1
                        reason = _death_reason(w.process.exitcode)
                        log.warning("task %d: %s", tid, reason)
                        w.conn.close()
                        replacement = _Worker(ctx, w.slot, self._env(w.slot))
                        workers[workers.index(w)] = replacement
                        self.pids = [x.process.pid for x in workers]
                        yield TaskResult(tid, False, error=WorkerDied(reason))
        finally:
            for w in workers:
                w.stop(timeout=5.0)
            self.pids = []

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _ray_task(fn: TaskFn, item: Any, task_id: int, queue: Any) -> Any:
    """What a Ray worker runs: ``fn`` with a progress function feeding the driver's queue."""

    def progress(payload: Any) -> None:
        if queue is not None:
            try:
                queue.put_nowait((task_id, payload))
            except Exception:  # noqa: BLE001 - progress is best effort
                pass

    try:
        return fn(item, progress)
    except BaseException as err:  # noqa: BLE001 - make sure the driver can rebuild it
        raise _portable_error(err) from None


class RayEngine:
    """Tasks on a Ray cluster (``address``: ``auto``, ``ray://host:10001``, or None = start a local one).

    ``gpus_per_task``: GPUs each task declares, fractions allowed (None:
    ``$HDRVIDEO_RAY_GPUS_PER_TASK``, else 1 when the cluster has GPUs and ``device`` is not
    ``cpu``, else 0). ``cpus_per_task``: CPUs each task declares.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, gpus_per_task: float | None = None, cpus_per_task: float = 1,
                 device: str | None = None, max_retries: int = 2, init_kwargs: dict[str, Any] | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise UsageError("--engine ray needs Ray: pip install 'hdrvideo[ray]'") from None
        self.ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": False,
                                      "ignore_reinit_error": True}
            kwargs.update(init_kwargs or {})
            try:
                ray.init(**kwargs)
            except Exception as err:  # noqa: BLE001 - connection problems are usage errors here
                raise UsageError(f"cannot start or reach Ray at {address or 'a new local instance'}: {err}") from err
            self._started = True
        if gpus_per_task is None and os.environ.get("HDRVIDEO_RAY_GPUS_PER_TASK"):
            try:
                gpus_per_task = float(os.environ["HDRVIDEO_RAY_GPUS_PER_TASK"])
            except ValueError:
                raise UsageError("HDRVIDEO_RAY_GPUS_PER_TASK must be a number") from None
        if gpus_per_task is None:
            has_gpu = ray.cluster_resources().get("GPU", 0) > 0
            gpus_per_task = 1.0 if has_gpu and (device or "cuda").startswith("cuda") else 0.0
        self.gpus_per_task = float(gpus_per_task)
        self.cpus_per_task = float(cpus_per_task)
        self.max_retries = int(max_retries)

    def run(self, fn: TaskFn, items: list[Any], *, on_progress=None, on_start=None) -> Iterator[TaskResult]:
        ray = self.ray
        queue = None
        if on_progress is not None:
            from ray.util.queue import Queue

            queue = Queue(maxsize=10_000)
        remote = ray.remote(_ray_task).options(num_gpus=self.gpus_per_task, num_cpus=self.cpus_per_task,
                                               max_retries=self.max_retries, retry_exceptions=False)
        refs = {}
        for i, item in enumerate(items):
            if on_start:
                on_start(i)
            refs[remote.remote(fn, item, i, queue)] = i
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
                self._drain(queue, on_progress)
                for ref in done:
                    i = refs[ref]
                    try:
                        value = ray.get(ref)
                    except ray.exceptions.RayTaskError as err:
                        cause = getattr(err, "cause", None)
                        yield TaskResult(i, False, error=cause if isinstance(cause, BaseException) else RemoteError(str(err).splitlines()[0]))
                        continue
                    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as err:
                        yield TaskResult(i, False, error=WorkerDied(f"Ray worker died: {type(err).__name__}"))
                        continue
                    except ray.exceptions.RayError as err:
                        yield TaskResult(i, False, error=RemoteError(f"{type(err).__name__}: {str(err).splitlines()[0]}"))
                        continue
                    yield TaskResult(i, True, value=value)
            self._drain(queue, on_progress)
        finally:
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001
                    pass
            if queue is not None:
                try:
                    queue.shutdown()
                except Exception:  # noqa: BLE001
                    pass

    @staticmethod
    def _drain(queue, on_progress) -> None:
        if queue is None or on_progress is None:
            return
        while True:
            try:
                tid, payload = queue.get_nowait()
            except Exception:  # noqa: BLE001 - Empty
                return
            on_progress(tid, payload)

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False


# --------------------------------------------------------------------------------------


def local_gpu_ids(device: str | None) -> list[int]:
    """GPUs a local pool spreads over: all visible ones unless ``device`` names one (or cpu)."""
    if device is not None and (device == "cpu" or ":" in device):
        return []
    try:
        import torch

        return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    except Exception:  # noqa: BLE001
        return []


def make_engine(name: str, workers: int | None = None, *, tasks: int = 1, device: str | None = None,
                ray_address: str | None = None, gpus_per_task: float | None = None,
                in_process: bool | None = None) -> Engine:
    """An engine by name. ``workers=None``: one per GPU, else a CPU-friendly default."""
    name = (name or "local").lower()
    if name == "ray":
        return RayEngine(ray_address, gpus_per_task=gpus_per_task, device=device)
    if name != "local":
        raise UsageError(f"unknown engine {name!r} (choose local or ray)")
    if ray_address:
        raise UsageError("--ray-address needs --engine ray")
    gpus = local_gpu_ids(device)
    if workers is None:
        workers = len(gpus) if gpus else max(1, min(tasks, (os.cpu_count() or 1) // 4))
    workers = max(1, min(int(workers), max(1, tasks)))
    threads = None
    if not gpus and workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
    return LocalEngine(workers, in_process=in_process, gpu_ids=gpus if len(gpus) > 1 else None,
                       threads_per_worker=threads)
