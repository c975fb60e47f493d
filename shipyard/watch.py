"""Scanning an RL run: each checkpoint found, whether it is complete, and if so snapshotted and validated.

`scan` lists the source once, applies the layout completion rules, and for each
complete checkpoint takes a snapshot and validates the copy. A bad checkpoint
is reported with its reason and the scan goes on to the next one. Called by
`shipyard checkpoints` and by the watch flow.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from shipyard.errors import CheckpointError
from shipyard.layouts import TRAINER_STATE, Found, find_checkpoints
from shipyard.snapshot import model_files, take_snapshot
from shipyard.sources import Source
from shipyard.trainer_state import metrics_at, read_trainer_state
from shipyard.validation import validate_checkpoint


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as the watcher sees it; `digest`, `files` and `path` are set once snapshotted."""

    source_uri: str
    run_id: str
    step: int
    layout: str
    uri: str
    state: str  # complete | incomplete | invalid
    reason: str = ""
    digest: str = ""
    path: str = ""  # the snapshot directory
    files: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def scan(
    source: Source, cache: Path, allow_pickle_weights: bool = False, skip: Collection[str] = ()
) -> list[Checkpoint]:
    """Every checkpoint of `source` not in `skip` (uris), by step; complete ones snapshotted and validated."""
    root = source.uri.rstrip("/") + "/"
    listing = source.list_files(prune=[uri.removeprefix(root) for uri in skip if uri.startswith(root)])
    run_id = PurePosixPath(source.uri.rstrip("/")).name
    return [
        _inspect(source, listing, found, run_id, cache, allow_pickle_weights)
        for found in find_checkpoints(listing, source.read_text)
        if checkpoint_uri(source, found) not in skip
    ]


def checkpoint_uri(source: Source, found: Found) -> str:
    return f"{source.uri.rstrip('/')}/{found.path}"


def _inspect(
    source: Source, listing: list[str], found: Found, run_id: str, cache: Path, allow_pickle_weights: bool
) -> Checkpoint:
    base = Checkpoint(source.uri, run_id, found.step, found.layout, checkpoint_uri(source, found), "")
    if not found.complete:
        return replace(base, state="incomplete", reason=found.reason)
    try:
        snap = take_snapshot(source, found.path, model_files(listing, found.path), cache)
    except CheckpointError as exc:
        return replace(base, state="invalid", reason=str(exc))
    try:
        validate_checkpoint(snap.path, allow_pickle_weights=allow_pickle_weights)
        has_state = f"{found.path}/{TRAINER_STATE}" in listing
        metrics = metrics_at(read_trainer_state(snap.path / TRAINER_STATE), found.step) if has_state else {}
    except CheckpointError as exc:
        # Name the checkpoint as the user knows it, not its snapshot in the cache.
        return replace(base, state="invalid", reason=str(exc).replace(str(snap.path), base.uri), digest=snap.digest)
    return replace(base, state="complete", digest=snap.digest, path=str(snap.path), files=snap.files, metrics=metrics)
