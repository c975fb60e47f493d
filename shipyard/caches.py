"""The caches under the home, their sizes, and what `gc` evicts to keep each under its budget.

Seven caches grow as a run goes on: snapshots of checkpoints (`snapshots/`,
files hard-linked to content-addressed blobs), sharded checkpoints converted
to models (`converted/`), post-trained `candidates/`,
`staging/` (hard links to candidates plus metadata), `champions/` pulled to
gate against, `evals/` results and `gates/` reports. Each top-level entry of a
cache is evicted whole, least recently used first (its directory's mtime; a
reuse touches it), until the cache's bytes (each inode counted once) are
within its budget. Never evicted: what an in-flight checkpoint needs (its
snapshot or converted model, the candidates made from it and their staging), each line's newest
champion, and anything used within `keep_recent_seconds` (another process may
have it in hand); blobs no snapshot links to any more go with the last
snapshot that did. `plan` is pure; `collect` measures, plans and (unless a dry
run) deletes. Called by the watcher after each poll and by `shipyard gc`.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from shipyard.settings import CacheSettings

LOCK = ".in-use"
CACHES = ("snapshots", "converted", "candidates", "staging", "champions", "evals", "gates")


def write_whole(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file renamed into place: a reader sharing the home (another
    process, another pool) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Entry:
    """One evictable unit of a cache: a directory (or an orphaned blob) and the inodes it holds."""

    cache: str
    path: Path
    used: float  # last use, seconds since the epoch
    inodes: dict[int, int] = field(default_factory=dict)  # inode -> bytes
    pinned: str = ""  # why it is kept whatever the budget ("" if it may go)


@dataclass(frozen=True)
class Usage:
    """What a cache holds, what the plan evicts from it, and what it holds after."""

    cache: str
    budget: int
    before: int
    after: int
    entries: int
    evicted: list[Entry]
    pinned: int  # entries kept because something needs them

    def as_dict(self) -> dict[str, object]:
        return {
            "cache": self.cache,
            "budget": self.budget,
            "bytes": self.before,
            "bytes_after": self.after,
            "entries": self.entries,
            "evicted": [str(e.path) for e in self.evicted],
            "pinned": self.pinned,
            "over_budget": self.after > self.budget,
        }


def plan(cache: str, entries: list[Entry], budget: int) -> Usage:
    """Which entries to evict, least recently used first, so the cache's bytes fit `budget`; pinned ones stay."""
    holders = Counter(ino for e in entries for ino in e.inodes)
    sizes = {ino: size for e in entries for ino, size in e.inodes.items()}
    before = used = sum(sizes.values())
    evicted = []
    for entry in sorted(entries, key=lambda e: e.used):
        if used <= budget:
            break
        if entry.pinned:
            continue
        evicted.append(entry)
        for ino in entry.inodes:
            holders[ino] -= 1
            if holders[ino] == 0:
                used -= sizes[ino]
    return Usage(cache, budget, before, used, len(entries), evicted, sum(bool(e.pinned) for e in entries))


def collect(home: Path, budgets: CacheSettings, in_flight: set[str], now: float, dry_run: bool = False) -> list[Usage]:
    """Measure every cache under `home`, plan each against its budget, and evict (unless `dry_run`).

    `in_flight`: the snapshot digests of checkpoints selected and not finished (`selection.in_flight_digests`).
    """
    needed = _needed(home, in_flight)
    usages = []
    for cache in CACHES:
        usage = plan(cache, entries(home, cache, needed, now - budgets.keep_recent_seconds), getattr(budgets, cache))
        if not dry_run:
            for entry in usage.evicted:
                _remove(entry.path)
            if cache == "snapshots" and usage.evicted:
                _remove_orphan_blobs(home / "snapshots" / "blobs" / "sha256", now - budgets.keep_recent_seconds)
        usages.append(usage)
    return usages


@dataclass(frozen=True)
class _Needed:
    snapshots: set[str]  # digests of in-flight checkpoints
    candidates: set[str]  # candidate keys made from them


def _needed(home: Path, digests: set[str]) -> _Needed:
    keys = set()
    for lineage in (home / "candidates").glob("*/lineage.json"):
        try:
            if Path(str(json.loads(lineage.read_text()).get("checkpoint", ""))).name in digests:
                keys.add(lineage.parent.name)
        except (OSError, ValueError, AttributeError):
            continue  # unreadable: not known to be needed
    return _Needed(digests, keys)


def entries(home: Path, cache: str, needed: _Needed, recent: float) -> list[Entry]:
    """The evictable entries of one cache; `recent` is the time after which a use counts as recent."""
    root = home / cache
    if cache == "snapshots":
        found = [_entry(cache, p, recent, needed.snapshots) for p in _children(root / "checkpoints")]
        found += [_entry(cache, p, recent, set(), stale=True) for p in _children(root / "tmp")]
        blobs = _children(root / "blobs" / "sha256")
        return found + [_entry(cache, p, recent, set(), stale=True) for p in blobs if _orphan(p)]
    if cache == "champions":
        found = []
        for line in _children(root):
            versions = sorted(_children(line), key=lambda p: _version(p.name))
            found += [_entry(cache, p, recent, {versions[-1].name}) for p in versions]
        return found
    by_cache = {"candidates": needed.candidates, "staging": needed.candidates, "converted": needed.snapshots}
    pins = by_cache.get(cache, set())
    leftover = ("tmp", ".")  # temporary work, or a conversion a kill left to be resumed
    return [_entry(cache, p, recent, pins, stale=p.name.startswith(leftover)) for p in _children(root)]


def _entry(cache: str, path: Path, recent: float, needed: set[str], stale: bool = False) -> Entry:
    """`stale`: a leftover (temporary work, an orphaned blob) — least recently used of all once not recent."""
    try:
        used = path.lstat().st_mtime
    except FileNotFoundError:
        used = 0.0
    pinned = "in use by an in-flight checkpoint" if path.name in needed else ""
    if used > recent:
        pinned = pinned or "used recently"
    if _locked(path):
        pinned = pinned or "being written"
    return Entry(cache, path, 0.0 if stale and not pinned else used, _inodes(path), pinned)


def _inodes(path: Path) -> dict[int, int]:
    found: dict[int, int] = {}
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            info = current.lstat()
        except FileNotFoundError:
            continue
        found[info.st_ino] = info.st_blocks * 512
        if current.is_dir() and not current.is_symlink():
            stack += list(current.iterdir())
    return found


def _children(directory: Path) -> list[Path]:
    return sorted(directory.iterdir()) if directory.is_dir() else []


def _orphan(blob: Path) -> bool:
    return blob.lstat().st_nlink == 1


def _version(name: str) -> int:
    digits = name.removeprefix("v")
    return int(digits) if digits.isdigit() else -1


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove_orphan_blobs(blobs: Path, recent: float) -> None:
    for blob in _children(blobs):
        if _orphan(blob) and blob.lstat().st_mtime <= recent:
            blob.unlink(missing_ok=True)


@contextmanager
def working(parent: Path) -> Iterator[Path]:
    """A temporary directory under `parent`, locked while in use so that no `gc` removes it, then removed."""
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent) as work, (Path(work) / LOCK).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield Path(work)


@contextmanager
def resumable(directory: Path) -> Iterator[Path]:
    """`directory`, made if absent and locked while in use (another process wanting it waits); what a kill leaves
    in it is there for the next user to resume from; removed once the work in it ends, done or failed."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / LOCK).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield directory
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def _locked(path: Path) -> bool:
    if not (path / LOCK).is_file():
        return False
    try:
        with (path / LOCK).open() as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def touch(path: Path) -> None:
    """Mark a cache entry as just used (eviction is least recently used first)."""
    with suppress(OSError):  # gone or not ours: nothing to mark
        os.utime(path)
