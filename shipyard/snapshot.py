"""Snapshots: a checkpoint's files copied into a content-addressed local cache before any use.

Trainers rotate old checkpoints away, so the watcher copies a checkpoint's
model files, hashing them on the way, into `blobs/sha256/<digest>`, then
builds `checkpoints/<checkpoint digest>/` from hard links to those blobs (a
copy where links are not possible). A file seen before is stored once. The
directory appears by one rename, so a reader never sees half a snapshot.
Trainer-state pickles (optimizer, scheduler, RNG state, training arguments)
are training state, not weights, and are not copied. Called by the watcher.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from shipyard.errors import CheckpointInFlux
from shipyard.layouts import TRAINER_STATE_PICKLES
from shipyard.sources import Source, file_digest


@dataclass(frozen=True)
class Snapshot:
    path: Path
    files: dict[str, str]  # relative name -> sha256
    digest: str


def checkpoint_digest(files: dict[str, str]) -> str:
    """One digest for a checkpoint: sha256 over its sorted (name, file digest) pairs."""
    lines = "".join(f"{name}\t{digest}\n" for name, digest in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def directory_digest(path: Path) -> str:
    """The checkpoint digest of a local model directory, as a snapshot of it would have (trainer pickles left out)."""
    files = {
        p.relative_to(path).as_posix(): file_digest(p)
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name not in TRAINER_STATE_PICKLES
    }
    return checkpoint_digest(files)


def model_files(listing: list[str], checkpoint: str) -> list[str]:
    """The names, relative to `checkpoint`, of the files a snapshot keeps."""
    prefix = f"{checkpoint}/"
    names = [f.removeprefix(prefix) for f in listing if f.startswith(prefix)]
    return sorted(n for n in names if PurePosixPath(n).name not in TRAINER_STATE_PICKLES)


def take_snapshot(source: Source, checkpoint: str, names: list[str], cache: Path) -> Snapshot:
    """Copy and hash `names` of `checkpoint` from `source` into `cache`; reuse what is there.

    One checkpoint at one moment: every file's version (inode, size, mtime; an ETag on S3) is read before the
    first copy and after the last, and any change is `CheckpointInFlux` (retried later), never a mixed snapshot.
    """
    blobs = cache / "blobs" / "sha256"
    tmp = cache / "tmp"
    for d in (blobs, tmp):
        d.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    before = {name: source.version(checkpoint, name) for name in names}
    with tempfile.TemporaryDirectory(dir=tmp) as staging:
        for name in names:
            part = Path(staging) / uuid.uuid4().hex
            files[name] = source.fetch(checkpoint, name, part)
            blob = blobs / files[name]
            if not blob.exists():
                os.replace(part, blob)
        after = {name: source.version(checkpoint, name) for name in names}
        if changed := sorted(name for name in names if before[name] != after[name]):
            gone = all(v is None for v in after.values())
            where = f"{source.uri}/{checkpoint}"
            raise CheckpointInFlux(f"{where}: {', '.join(changed[:3])} changed while being copied", gone=gone)
        digest = checkpoint_digest(files)
        final = cache / "checkpoints" / digest
        if not final.exists():
            building = Path(staging) / "snapshot"
            for name, digest_of_file in files.items():
                (building / name).parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(blobs / digest_of_file, building / name)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(building, final)
            except OSError:  # another watcher made the same snapshot first
                if not final.exists():
                    raise
    return Snapshot(final, files, digest)


def _link_or_copy(blob: Path, dest: Path) -> None:
    try:
        os.link(blob, dest)
    except OSError:
        shutil.copyfile(blob, dest)
