"""Small filesystem helpers shared by the stages (engine cache, batch state, work folders)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "ExclusiveLock", "make_work_dir", "remove_stale_work_dirs"]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class ExclusiveLock:
    """A non-blocking exclusive lock on ``path`` (a lock file) that leaves no file behind.

    POSIX ``flock`` on ``path``, which is unlinked *before* the lock is released. That is
    race-free because acquiring re-checks, once the lock is held, that ``path`` still names the
    locked inode: a process that locked an inode another one has just unlinked tries again
    on the new file. ``filelock`` keeps its lock files (unlinking is only safe with that
    check), which is why this is not ``filelock``; without ``fcntl`` (Windows) it falls back
    to ``filelock``, whose lock file then stays.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self._fd: int | None = None
        self._fallback = None

    def acquire(self) -> bool:
        """True if now held; False if another process holds it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            from filelock import FileLock, Timeout

            self._fallback = FileLock(self.path)
            try:
                self._fallback.acquire(timeout=0)
            except Timeout:
                return False
            return True
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return True
            os.close(fd)  # locked an inode its holder had just unlinked: take the new one

    def release(self) -> None:
        if self._fallback is not None:  # pragma: no cover - Windows
            self._fallback.release()
            self._fallback = None
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None
# --------------------------------------------------------------------------------------
# Work folders with an owner record, and removal of stale ones
# --------------------------------------------------------------------------------------

OWNER_FILE = "owner.json"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), to tell a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def make_work_dir(parent: str | os.PathLike[str], prefix: str, suffix: str) -> str:
    """``tempfile.mkdtemp`` in ``parent`` plus an owner record (host, pid, process start time),
    so that a later run can tell a folder left by a killed process from one still in use."""
    import json
    import socket

    path = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent)
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_time(os.getpid())}
    try:
        with open(os.path.join(path, OWNER_FILE), "w", encoding="utf-8") as fh:
            json.dump(owner, fh)
    except OSError:
        pass
    return path


def _owner_gone(path: str) -> bool:
    import json
    import socket

    try:
        with open(os.path.join(path, OWNER_FILE), encoding="utf-8") as fh:
            owner = json.load(fh)
        pid = int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no readable record: not ours to judge
    if owner.get("host") != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    start = owner.get("start")
    return start is not None and _start_time(pid) not in (None, start)  # the pid was reused


def remove_stale_work_dirs(parent: str | os.PathLike[str], suffixes: tuple[str, ...]) -> list[str]:
    """Remove hidden folders ``.*SUFFIX`` in ``parent`` whose owner process (on this host) is gone."""
    import logging

    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(".") and name.endswith(suffixes)):
            continue
        path = os.path.join(parent, name)
        if os.path.isdir(path) and not os.path.islink(path) and _owner_gone(path):
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.exists(path):
                removed.append(path)
                logging.getLogger("hdrvideo").info("removed %s, left behind by a process that is gone", path)
    return removed
