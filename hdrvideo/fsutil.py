"""Small filesystem helpers shared by the stages (engine cache, batch state)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "ExclusiveLock"]


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
