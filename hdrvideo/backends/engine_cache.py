"""On-disk cache of built artefacts: TensorRT engines, timing caches and exported ONNX graphs.

Layout under the cache root (``$HDRVIDEO_CACHE``, else the platform's user cache dir, e.g.
``~/.cache/hdrvideo``; the Docker image bakes one in)::

    engines/<name>-<digest16>.engine   + .json sidecar (the full key, sizes, build time)
    timing/<digest16>.timing           TensorRT timing caches (per TRT version + GPU)
    onnx/<arch>-<kind>-<digest16>.onnx + .json sidecar

The digest is the SHA-256 of the canonical JSON of the key, so a different key is a different
file. Writes go to a temporary file in the same directory and are renamed into place
(``os.replace``: readers see the old file or the new one, never half of one), under a
``filelock`` lock per artefact, so two farm jobs never build the same engine into one file:
the second waits, then finds the first one's result.

An artefact that fails to load (stale engine from another TensorRT or driver, truncated or
corrupt file, sidecar whose key differs) is rebuilt with a warning, never crashed on.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from filelock import FileLock
from ..fsutil import atomic_write_bytes  # noqa: F401 (re-exported)

__all__ = [
    "cache_root",
    "key_digest",
    "atomic_write_bytes",
    "EngineCache",
    "CacheEntry",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

LOCK_TIMEOUT_S = 3600.0  # an engine build can take minutes; a stuck lock holder is a bug


def cache_root(path: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: ``path``, else ``$HDRVIDEO_CACHE``, else the user cache dir."""
    if path:
        return Path(path)
    env = os.environ.get("HDRVIDEO_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("hdrvideo"))


def key_digest(key: dict[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of ``key`` (sorted keys, no whitespace)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    size: int
    meta: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind", "engine"))


class EngineCache:
    """A cache root with locking, atomic writes, sidecars and rebuild-on-failure."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = cache_root(root)

    # -- paths ---------------------------------------------------------------------------
    @property
    def engines_dir(self) -> Path:
        return self.root / "engines"

    @property
    def timing_dir(self) -> Path:
        return self.root / "timing"

    @property
    def onnx_dir(self) -> Path:
        return self.root / "onnx"

    def engine_path(self, key: dict[str, Any], name: str = "engine") -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return self.engines_dir / f"{safe}-{key_digest(key)[:16]}.engine"

    @staticmethod
    def sidecar(path: Path) -> Path:
        return path.with_suffix(path.suffix + ".json")

    @staticmethod
    def lock(path: Path) -> FileLock:
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S)

    # -- sidecars ------------------------------------------------------------------------
    def read_sidecar(self, path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(self.sidecar(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _key_matches(self, path: Path, key: dict[str, Any]) -> bool:
        meta = self.read_sidecar(path)
        return meta is not None and meta.get("key") == json.loads(json.dumps(key, default=str))

    def _write(self, path: Path, data: bytes, key: dict[str, Any], kind: str, extra: dict | None = None) -> None:
        atomic_write_bytes(path, data)
        meta = {"kind": kind, "key": key, "digest": key_digest(key), "file": path.name, "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(), "created": _now(), **(extra or {})}
        atomic_write_bytes(self.sidecar(path), json.dumps(meta, indent=2, sort_keys=True, default=str).encode())

    # -- plain files (exported ONNX) -----------------------------------------------------
    def get_or_create_file(self, path: Path, key: dict[str, Any], build: Callable[[], bytes],
                           kind: str = "onnx") -> Path:
        """``path`` if it exists with a matching, intact sidecar; else build it under the lock."""
        if self._valid_file(path, key):
            return path
        with self.lock(path):
            if self._valid_file(path, key):  # built by another process while we waited
                return path
            if path.exists():
                log.warning("cached %s %s is stale or corrupt; rebuilding it", kind, path.name)
            self._write(path, build(), key, kind)
        return path

    def _valid_file(self, path: Path, key: dict[str, Any]) -> bool:
        if not path.is_file() or not self._key_matches(path, key):
            return False
        meta = self.read_sidecar(path) or {}
        try:
            return path.stat().st_size == int(meta.get("size", -1))
        except OSError:
            return False

    # -- engines -------------------------------------------------------------------------
    def load_or_build(
        self,
        key: dict[str, Any],
        build: Callable[[], bytes],
        load: Callable[[bytes], T | None],
        name: str = "engine",
        rebuild: bool = False,
        extra: Callable[[], dict[str, Any]] | None = None,
    ) -> tuple[T, Path, bool]:
        """Load the cached engine for ``key``, building (and caching) it when missing or stale.

        ``build()`` returns the serialized engine; ``load(bytes)`` deserializes it and returns
        ``None`` (or raises) when it cannot — a stale or corrupt engine, which is rebuilt with a
        warning. Returns (engine, path, built_now).
        """
        path = self.engine_path(key, name)
        if not rebuild:
            got = self._try_load(path, key, load)
            if got is not None:
                return got, path, False
        with self.lock(path):
            if not rebuild:  # another process may have built it while we waited for the lock
                got = self._try_load(path, key, load, warn=True)
                if got is not None:
                    return got, path, False
            import time

            t0 = time.perf_counter()
            data = build()
            if not data:
                from ..errors import BackendError

                raise BackendError("TensorRT returned no engine (see the TensorRT log above)")
            seconds = time.perf_counter() - t0
            engine = self._load_bytes(data, load)
            if engine is None:
                from ..errors import BackendError

                raise BackendError(f"a freshly built engine for {name} does not deserialize")
            self._write(path, data, key, "engine", {"name": name, "build_seconds": round(seconds, 2),
                                                     **(extra() if extra else {})})
        return engine, path, True

    @staticmethod
    def _load_bytes(data: bytes, load: Callable[[bytes], T | None]) -> T | None:
        try:
            return load(data)
        except Exception as err:  # noqa: BLE001 - any failure means "rebuild"
            log.debug("engine failed to deserialize: %s", err)
            return None

    def _try_load(self, path: Path, key: dict[str, Any], load: Callable[[bytes], T | None],
                  warn: bool = True) -> T | None:
        if not path.is_file():
            return None
        reason = None
        if not self._key_matches(path, key):
            reason = "its sidecar is missing or records a different key"
        else:
            try:
                data = path.read_bytes()
            except OSError as err:
                data, reason = b"", f"it cannot be read ({err.strerror})"
            if reason is None:
                meta = self.read_sidecar(path) or {}
                if meta.get("sha256") and hashlib.sha256(data).hexdigest() != meta["sha256"]:
                    reason = "its contents do not match the recorded checksum (corrupt)"
                else:
                    engine = self._load_bytes(data, load)
                    if engine is not None:
                        return engine
                    reason = "it does not deserialize (stale TensorRT/driver version or corrupt)"
        if warn:
            log.warning("cached engine %s is unusable: %s; rebuilding it", path.name, reason)
        return None

    # -- timing caches -------------------------------------------------------------------
    def timing_path(self, key: dict[str, Any]) -> Path:
        return self.timing_dir / f"{key_digest(key)[:16]}.timing"

    def read_timing(self, key: dict[str, Any]) -> bytes:
        try:
            return self.timing_path(key).read_bytes()
        except OSError:
            return b""

    def write_timing(self, key: dict[str, Any], data: bytes) -> None:
        if not data:
            return
        path = self.timing_path(key)
        with self.lock(path):
            atomic_write_bytes(path, data)

    # -- listing / clearing --------------------------------------------------------------
    def entries(self) -> list[CacheEntry]:
        """Every cached engine and exported graph (with its sidecar), sorted by path."""
        out = []
        for folder, pattern in ((self.engines_dir, "*.engine"), (self.onnx_dir, "*.onnx")):
            if not folder.is_dir():
                continue
            for p in sorted(folder.glob(pattern)):
                try:
                    size = p.stat().st_size
                except OSError:
                    continue
                out.append(CacheEntry(p, size, self.read_sidecar(p) or {"kind": "unknown (no sidecar)"}))
        return out

    def clear(self, engines: bool = True, timing: bool = True, onnx: bool = False) -> int:
        """Remove cached artefacts (each under its lock, with its sidecar); returns how many."""
        removed = 0
        targets = []
        if engines:
            targets.append((self.engines_dir, "*.engine"))
        if onnx:
            targets.append((self.onnx_dir, "*.onnx"))
        if timing:
            targets.append((self.timing_dir, "*.timing"))
        for folder, pattern in targets:
            if not folder.is_dir():
                continue
            for p in sorted(folder.glob(pattern)):
                with self.lock(p):
                    try:
                        p.unlink()
                        removed += 1
                    except FileNotFoundError:
                        pass
                    try:
                        self.sidecar(p).unlink()
                    except FileNotFoundError:
                        pass
                try:
                    Path(str(p) + ".lock").unlink()
                except OSError:
                    pass
        return removed
