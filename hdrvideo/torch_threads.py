"""Torch's CPU intra-op thread count, set for hdrvideo's own work and put back afterwards.

Elementwise colour maths on video frames is memory-bound: on a busy CPU a second OpenMP thread
gains little and its spin-waits take cycles from the encoder (measured on 2 cores: the CPU time
of a classical conversion fell by a third, ``hdrvideo sample`` by three quarters, with one
thread). ``torch.set_num_threads`` in a thread sets that thread's OpenMP team and a process-wide
default that threads started later pick up; :class:`IntraOpThreads` restores the default when
the last user leaves.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

__all__ = ["IntraOpThreads"]


class IntraOpThreads:
    """``with IntraOpThreads(n):`` — torch ops of the calling thread (and of threads that call
    :meth:`use`) run on ``n`` intra-op threads (None: unchanged); the previous default is
    restored when the last such block exits."""

    _lock = threading.Lock()
    _users = 0
    _saved = 0

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def __enter__(self) -> "IntraOpThreads":
        with IntraOpThreads._lock:
            if IntraOpThreads._users == 0:
                IntraOpThreads._saved = torch.get_num_threads()
            IntraOpThreads._users += 1
        self.use(self.threads)
        return self

    def __exit__(self, *exc: Any) -> None:
        with IntraOpThreads._lock:
            IntraOpThreads._users -= 1
            if IntraOpThreads._users == 0:
                torch.set_num_threads(IntraOpThreads._saved)

    @staticmethod
    def use(threads: int | None) -> None:
        """In a worker thread started inside the block: its torch ops use ``threads`` (None: unchanged)."""
        if threads:
            torch.set_num_threads(int(threads))
