"""Snapshots: a checkpoint's files copied into a content-addressed local cache before any use.

Trainers rotate old checkpoints away, so the watcher copies a checkpoint's
model files, hashing them on the way, and builds `checkpoints/<checkpoint
digest>/` from them, each file hard-linked with `blobs/sha256/<digest>` (a
file seen before is stored once). `shipyard gc` evicts whole snapshots and the
blobs no snapshot links to any more. The
directory appears by one rename, so a reader never sees half a snapshot.
Trainer-state pickles (optimizer, scheduler, RNG state, training arguments)
are training state, not weights, and are not copied. Called by the watcher.
"""

from __future__ import annotations

import fnmatch
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from shipyard.caches import touch, working
from shipyard.checkpoints import is_trainer_pickle
from shipyard.digests import checkpoint_digest, remember
from shipyard.errors import CheckpointInFlux
from shipyard.intake.sources import Source

FETCHERS = 4  # files copied at once; each holds one 8 MiB buffer


@dataclass(frozen=True)
class Snapshot:
    path: Path
    files: dict[str, str]  # relative name -> sha256
    digest: str


def model_files(listing: list[str], checkpoint: str, keep: tuple[str, ...] = ()) -> list[str]:
    """The names, relative to `checkpoint`, of the files a snapshot keeps (those matching `keep`, if given)."""
    prefix = f"{checkpoint}/"
    names = [f.removeprefix(prefix) for f in listing if f.startswith(prefix)]
    names = [n for n in names if not keep or any(fnmatch.fnmatchcase(n, pattern) for pattern in keep)]
    return sorted(n for n in names if not is_trainer_pickle(PurePosixPath(n).name))


def take_snapshot(source: Source, checkpoint: str, names: list[str], cache: Path) -> Snapshot:
    """Copy and hash `names` of `checkpoint` from `source` into `cache`; reuse what is there.

    One checkpoint at one moment: every file's version (inode, size, mtime; an ETag on S3) is read before the
    first copy and after the last, and any change is `CheckpointInFlux` (retried later), never a mixed snapshot.
    A file already among the blobs is linked to it; the snapshot never needs a blob to still be there.
    """
    blobs = cache / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    before = {name: source.version(checkpoint, name) for name in names}
    with working(cache / "tmp") as staging:
        building = staging / "snapshot"
        for name in names:
            (building / name).parent.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=min(FETCHERS, os.cpu_count() or 1)) as pool:  # files in parallel
            fetched = pool.map(lambda name: source.fetch(checkpoint, name, building / name), names)
            files = dict(zip(names, fetched, strict=True))
        after = {name: source.version(checkpoint, name) for name in names}
        if changed := sorted(name for name in names if before[name] != after[name]):
            gone = all(v is None for v in after.values())
            where = f"{source.uri}/{checkpoint}"
            raise CheckpointInFlux(f"{where}: {', '.join(changed[:3])} changed while being copied", gone=gone)
        digest = checkpoint_digest(files)
        final = cache / "checkpoints" / digest
        if final.exists():
            touch(final)
            return Snapshot(final, files, digest)
        for name, file_digest in files.items():
            _share(building / name, blobs / file_digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(building, final)
        except OSError:  # another watcher made the same snapshot first
            if not final.exists():
                raise
            return Snapshot(final, files, digest)
    for name, file_digest in files.items():  # hashed on the way in: never read again to know them
        remember(final / name, file_digest)
    return Snapshot(final, files, digest)


def _share(path: Path, blob: Path) -> None:
    """Make `path` and `blob` one file: link the blob in its place if there is one, else make it the blob."""
    try:
        os.link(path, blob)
        return
    except FileExistsError:
        pass
    except OSError:
        return  # no hard links here: keep the copy
    spare = path.with_name(f".{uuid.uuid4().hex}")
    try:
        os.link(blob, spare)
    except OSError:
        return  # the blob went (gc) or cannot be linked: keep the copy
    os.replace(spare, path)
