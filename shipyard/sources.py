"""Checkpoint sources: where an RL run writes its checkpoints, behind one small protocol.

A source lists its files as relative posix paths, reads small marker files,
and copies one file of a checkpoint to a local path. `open_source` picks the
implementation from the URI. The local directory is here; the S3 prefix and
the Hugging Face Hub repo implement the same protocol. Called by the watcher.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Protocol

from shipyard.errors import InvalidCheckpoint, SourceError


class Source(Protocol):
    uri: str

    def list_files(self) -> list[str]:
        """Every file under the source, as a relative posix path."""
        ...

    def read_text(self, path: str) -> str:
        """A small file of the source, as text."""
        ...

    def fetch(self, checkpoint: str, name: str, dest: Path) -> None:
        """Copy file `name` of the checkpoint directory `checkpoint` to `dest`."""
        ...


class LocalSource:
    """A local directory an RL run writes into (`/path` or `file:///path`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = root.resolve().as_uri()

    def list_files(self) -> list[str]:
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: not a directory")
        files = []
        for dirpath, _, filenames in os.walk(self.root):
            base = Path(dirpath).relative_to(self.root)
            files += [(base / name).as_posix() for name in filenames]
        return sorted(files)

    def read_text(self, path: str) -> str:
        try:
            return (self.root / path).read_text(errors="replace")
        except OSError as exc:
            raise SourceError(f"{self.root / path}: cannot read ({exc.strerror})") from None

    def fetch(self, checkpoint: str, name: str, dest: Path) -> None:
        path = self.root / checkpoint / name
        inside = (self.root / checkpoint).resolve()
        if not path.resolve().is_relative_to(inside):
            raise InvalidCheckpoint(f"{path}: points outside the checkpoint ({path.resolve()})")
        try:
            shutil.copyfile(path, dest)
        except FileNotFoundError:
            raise InvalidCheckpoint(f"{path}: vanished while being copied (rotated away?)") from None


def open_source(uri: str) -> Source:
    """The source for `uri`: a local path or `file://` URI."""
    if uri.startswith("file://"):
        return LocalSource(Path(uri.removeprefix("file://")))
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise SourceError(f"{uri}: unsupported source scheme '{scheme}'; expected a local path or file://")
    return LocalSource(Path(uri))
