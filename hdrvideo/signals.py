"""Ctrl-C and SIGTERM: stop the work, but never a cleanup or a commit half-way.

With :func:`install` (the CLI, batch workers) SIGINT and SIGTERM raise ``KeyboardInterrupt``
in the main thread — exit code 130 in the CLI — except inside a :class:`critical` section
(removing a temporary folder, renaming the output into place, waiting for the pipeline's
threads), where the signal is held and raised when the outermost section ends. Once
:func:`finish` is called (the outcome is decided: the output is in place, or the error is
being reported) further signals are ignored, so a late signal can neither contradict the
result nor put a traceback on the screen while the interpreter exits.

:func:`handling` gives library callers the same protection for SIGINT while a conversion runs,
when Python's default SIGINT handler is in place; it changes nothing in other threads or when
the application installed its own handler.

Why the main thread must never leave while pipeline threads run (the SIGABRT of issue 10):
on CPython ≤ 3.13 a daemon thread that wants the GIL back after the interpreter started
finalising is ended with ``pthread_exit``; the forced unwind runs through C++ frames of torch
(pybind11's ``gil_scoped_release`` destructor is ``noexcept``) and ``std::terminate`` aborts
the process ("terminate called without an active exception"). And on CPython 3.11 a
``KeyboardInterrupt`` raised inside ``Thread.join`` marks a still-running thread as stopped
(bpo-45274), so joins cannot be trusted once a signal arrived: the pipeline waits on its own
events instead, inside a critical section.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["install", "reset", "finish", "critical", "handling", "handler", "INTERRUPTS"]

INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


class _State:
    depth = 0  # nesting of critical sections; a plain int, changed without a function call
    pending: int | None = None  # a signal held during a critical section
    finished = False  # the outcome is decided: signals are ignored


_STATE = _State()


def handler(signum: int, frame: Any) -> None:  # noqa: ARG001
    """The signal handler :func:`install` sets."""
    if _STATE.finished:
        return
    if _STATE.depth:
        _STATE.pending = signum
        return
    raise KeyboardInterrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install(signals: tuple[int, ...] = INTERRUPTS) -> bool:
    """Route ``signals`` (default SIGINT and SIGTERM) to KeyboardInterrupt with critical sections.

    Main thread only (returns False elsewhere). Resets the held/finished state.
    """
    if not _main_thread():
        return False
    reset()
    for s in signals:
        signal.signal(s, handler)
    return True


def reset() -> None:
    """Nothing held, nothing finished (a new command starts)."""
    _STATE.depth, _STATE.pending, _STATE.finished = 0, None, False


def finish() -> None:
    """The outcome is decided: ignore SIGINT/SIGTERM from now on, including a held one."""
    _STATE.finished = True
    _STATE.pending = None


class critical:
    """``with critical(): …`` — SIGINT/SIGTERM are held until the outermost section ends, then
    raised as KeyboardInterrupt (unless :func:`finish` was called meanwhile).

    Without :func:`install` (or :func:`handling`) it does nothing: the signal is raised as usual.
    """

    __slots__ = ()

    def __enter__(self) -> "critical":
        _STATE.depth += 1
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        _STATE.depth -= 1
        if _STATE.depth <= 0:
            _STATE.depth = 0
            held, _STATE.pending = _STATE.pending, None
            if held is not None and not _STATE.finished and exc_type is None:
                raise KeyboardInterrupt
        return False


@contextmanager
def handling() -> Iterator[None]:
    """Critical sections for library callers: while the block runs, SIGINT goes through
    :func:`handler` if Python's default handler was in place (main thread only)."""
    if not _main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    saved = (_STATE.depth, _STATE.pending, _STATE.finished)
    _STATE.depth, _STATE.pending, _STATE.finished = 0, None, False
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _STATE.depth, _STATE.pending, _STATE.finished = saved
