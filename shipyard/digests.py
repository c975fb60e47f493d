"""File digests, computed once: sha256 per file, remembered by the file's identity on disk.

A checkpoint's bytes are hashed when they are copied in; candidate keys, eval
cache keys, the gate and publishing all need the same digests again, often in
another process. `file_digest` answers from a small SQLite cache keyed by
(device, inode, size, mtime_ns) and hashes only what changed since; files
are hashed in parallel across cores (`file_digests`). A rewrite that keeps a
file's size and sets its mtime back is not seen — the cost of not reading
the bytes; `shipyard ledger verify --deep` re-hashes what a store holds. The
cache lives at `~/.cache/shipyard/digests.sqlite`; when it cannot be used
(read-only, corrupt) digests are computed as if there were none. Called by
snapshots, post-training, evaluation and publishing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from shipyard.checkpoints import is_trainer_pickle

RACY_NS = 2 * 10**9  # a file modified this recently may still change within the same mtime
_local = threading.local()


def digest_json(value: Any) -> str:
    """sha256 of the canonical JSON of `value` (sorted keys, no spaces): a digest of data, not of a file."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def cache_path() -> Path:
    return Path.home() / ".cache" / "shipyard" / "digests.sqlite"


def checkpoint_digest(files: dict[str, str]) -> str:
    """One digest for a checkpoint: sha256 over its sorted (name, file digest) pairs."""
    lines = "".join(f"{name}\t{digest}\n" for name, digest in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def directory_digest(path: Path) -> str:
    """The checkpoint digest of a local model directory, as a snapshot of it would have (trainer pickles left out)."""
    paths = [p for p in sorted(path.rglob("*")) if p.is_file() and not is_trainer_pickle(p.name)]
    names = [p.relative_to(path).as_posix() for p in paths]
    return checkpoint_digest(dict(zip(names, file_digests(paths), strict=True)))


def file_digest(path: Path) -> str:
    """The sha256 of a local file, from the cache when the file is unchanged."""
    key = _key(path)
    if (known := _lookup(key)) is not None:
        return known
    digest = hash_file(path)
    if _key(path) == key and time.time_ns() - key[3] > RACY_NS:  # unchanged while read, and not being written
        _store(key, digest)
    return digest


def file_digests(paths: Sequence[Path]) -> list[str]:
    """`file_digest` of each path, in order, the ones not cached hashed in parallel."""
    if len(paths) < 2:
        return [file_digest(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(len(paths), os.cpu_count() or 1)) as pool:
        return list(pool.map(file_digest, paths))


def remember(path: Path, digest: str) -> None:
    """Record the digest of a file just written and hashed on the way (a copy that hashed what it wrote)."""
    _store(_key(path), digest)


def hash_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _key(path: Path) -> tuple[int, int, int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def _db() -> sqlite3.Connection | None:
    """This thread's connection to the cache (None when it cannot be used)."""
    if not hasattr(_local, "db"):
        _local.db = None
        try:
            cache_path().parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(cache_path(), timeout=5)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS digests (dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER,"
                " sha256 TEXT NOT NULL, PRIMARY KEY (dev, ino))"
            )
            _local.db = connection
        except (OSError, sqlite3.Error):
            pass  # no cache: every digest is computed
    db: sqlite3.Connection | None = _local.db
    return db


def _lookup(key: tuple[int, int, int, int]) -> str | None:
    if (db := _db()) is None:
        return None
    try:
        row = db.execute("SELECT sha256 FROM digests WHERE dev=? AND ino=? AND size=? AND mtime_ns=?", key).fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def _store(key: tuple[int, int, int, int], digest: str) -> None:
    if (db := _db()) is None:
        return
    try:
        with db:
            db.execute("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?)", (*key, digest))
    except sqlite3.Error:
        pass  # a busy or read-only cache only costs a re-hash later
