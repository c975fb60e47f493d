"""Scanning an RL run: each checkpoint found, whether it is complete, and if so snapshotted and validated.

`list_run` lists the source once and applies the layout completion rules;
nothing is copied. `Listing.inspect` takes a snapshot of one complete
checkpoint and validates the copy, so a caller copies only what it takes;
`scan` does both for every complete checkpoint. A bad checkpoint
is reported with its reason and the scan goes on to the next one: whatever
one checkpoint holds (a file name that is not UTF-8, a file that cannot be
read, a header that breaks a library) is that checkpoint's fate, never the
end of the poll. Called by `shipyard checkpoints` and by the watch flow.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from shipyard.checkpoints import TRAINER_STATE, Checkpoint, CheckpointState
from shipyard.errors import CheckpointError, CheckpointInFlux, ShipyardError
from shipyard.intake.layouts import Found, find_checkpoints, run_config
from shipyard.intake.snapshot import model_files, take_snapshot
from shipyard.intake.sources import Source, in_run
from shipyard.intake.trainer_state import metrics_at, read_trainer_state
from shipyard.settings import ConvertSettings

log = logging.getLogger(__name__)
DEFAULT_CONVERT = ConvertSettings()


@dataclass(frozen=True)
class Listing:
    """One listing of a run: the checkpoints found in it, and how to snapshot and validate one of them."""

    source: Source
    files: list[str]
    found: dict[str, Found]  # checkpoint uri -> what the layout rules found

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint found, as listed: complete ones with their `trainer_state.json` metrics, nothing copied."""
        return [self._listed(f) for f in self.found.values()]

    def inspect(
        self,
        checkpoint: Checkpoint,
        home: Path,
        allow_pickle_weights: bool = False,
        convert: ConvertSettings = DEFAULT_CONVERT,
    ) -> Checkpoint:
        """Snapshot a listed complete checkpoint under `home`, convert it if sharded, validate: its state and reason."""
        found = self.found[checkpoint.uri]
        config_dir = run_config(self.files, found, self.found.values()) if not found.hf_files else None
        return _inspect(self.source, self.files, found, config_dir, checkpoint, home, allow_pickle_weights, convert)

    def _listed(self, found: Found) -> Checkpoint:
        base = (self.source.uri, _run_id(self.source), found.step, found.layout, checkpoint_uri(self.source, found))
        if not found.complete:
            return Checkpoint(*base, CheckpointState.INCOMPLETE, reason=found.reason)
        metrics: dict[str, float] = {}
        if f"{found.path}/{TRAINER_STATE}" in self.files:
            with suppress(ValueError, AttributeError, OSError, ShipyardError):  # validation names what is wrong
                metrics = metrics_at(json.loads(self.source.read_text(f"{found.path}/{TRAINER_STATE}")), found.step)
        return Checkpoint(*base, CheckpointState.COMPLETE, metrics=metrics)


def list_run(source: Source, skip: Collection[str] = ()) -> Listing:
    """List `source` once and apply the layout completion rules; checkpoints whose uri is in `skip` are left out."""
    root = source.uri.rstrip("/") + "/"
    files = source.list_files(prune=[uri.removeprefix(root) for uri in skip if uri.startswith(root)])
    found = {checkpoint_uri(source, f): f for f in find_checkpoints(files, source.read_text)}
    return Listing(source, files, {uri: f for uri, f in found.items() if uri not in skip})


def scan(
    source: Source,
    home: Path,
    allow_pickle_weights: bool = False,
    skip: Collection[str] = (),
    validate: bool = True,
    convert: ConvertSettings = DEFAULT_CONVERT,
) -> list[Checkpoint]:
    """Every checkpoint of `source` not in `skip` (uris), by step; complete ones snapshotted (under `home`),
    converted if sharded, and validated.

    With `validate` off, nothing is copied: complete checkpoints come with the metrics of their
    `trainer_state.json` (read from the source) and no digest.
    """
    listing = list_run(source, skip)
    listed = listing.checkpoints()
    if not validate:
        return listed
    return [
        listing.inspect(c, home, allow_pickle_weights, convert) if c.state == CheckpointState.COMPLETE else c
        for c in listed
    ]


def checkpoint_uri(source: Source, found: Found) -> str:
    return f"{source.uri.rstrip('/')}/{found.path}"


def _run_id(source: Source) -> str:
    return PurePosixPath(source.uri.rstrip("/")).name


def _inspect(
    source: Source,
    listing: list[str],
    found: Found,
    config_dir: str | None,
    base: Checkpoint,
    home: Path,
    allow_pickle_weights: bool,
    convert: ConvertSettings,
) -> Checkpoint:
    base = replace(base, reason="", metrics={})
    names = model_files(listing, found.path, found.keep)
    if undecodable := [n for n in names if not _utf8(n)]:
        return replace(
            base, state=CheckpointState.INVALID, reason=f"{base.uri}/{undecodable[0]!r}: file name is not valid UTF-8"
        )
    try:
        snap = take_snapshot(source, found.path, names, home / "snapshots")
    except CheckpointInFlux as exc:  # no verdict on the checkpoint: look again next poll, unless it is gone
        if exc.gone:
            return replace(
                base, state=CheckpointState.GONE, reason="rotated away by the trainer before it could be copied"
            )
        return replace(base, state=CheckpointState.INCOMPLETE, reason=f"{exc}; looked at again next poll")
    except CheckpointError as exc:
        return replace(base, state=CheckpointState.INVALID, reason=str(exc))
    except (OSError, ValueError) as exc:  # a file that cannot be read, vanished mid-copy, …: this checkpoint's fate
        return replace(
            base, state=CheckpointState.INVALID, reason=f"{base.uri}: cannot be copied ({type(exc).__name__}: {exc})"
        )
    from shipyard.intake.validation import validate_checkpoint  # torch: paid only when a checkpoint is validated

    model, converted_by = snap.path, ""
    try:
        from shipyard.intake.convert import is_adapter

        fmt = "lora" if found.format == "hf" and is_adapter(snap.path) else found.format
        if fmt != "hf":
            side = _run_config(source, listing, config_dir, home) if fmt != "hf" and config_dir else None
            with side or nullcontext() as config_copy:
                model, converted_by = _convert(found, fmt, snap.path, snap.digest, home, convert, config_copy)
        notes = validate_checkpoint(model, allow_pickle_weights=allow_pickle_weights)
        has_state = f"{found.path}/{TRAINER_STATE}" in listing
        metrics = metrics_at(read_trainer_state(snap.path / TRAINER_STATE), found.step) if has_state else {}
    except (CheckpointError, OSError, ValueError, RuntimeError) as exc:
        # Name the checkpoint as the user knows it, not its copies in the cache.
        reason = str(exc) if isinstance(exc, CheckpointError) else f"cannot be validated ({type(exc).__name__}: {exc})"
        reason = reason.replace(str(model), base.uri).replace(str(snap.path), base.uri)
        return replace(base, state=CheckpointState.INVALID, reason=reason, digest=snap.digest)
    for note in notes:
        log.info("%s: tolerated: %s", base.uri, note)
    files = snap.files if model == snap.path else {}
    return replace(
        base,
        state=CheckpointState.COMPLETE,
        digest=snap.digest,
        path=str(model),
        files=files,
        metrics=metrics,
        converted_by=converted_by,
    )


def _convert(
    found: Found,
    fmt: str,
    snapshot: Path,
    digest: str,
    home: Path,
    settings: ConvertSettings,
    run_config: Path | None = None,
) -> tuple[Path, str]:
    """The model directory a sharded checkpoint converts to, under `home/converted/<digest>`, and by what.

    Config and tokenizer come from the checkpoint, else the run (`run_config`), else `convert.base_model`.
    """
    from shipyard.intake.convert import convert

    hf_files = [snapshot / found.hf_files] if found.hf_files else []
    hf_files += [run_config] if run_config else []
    hf_files += [settings.base_model] if settings.base_model else []
    done = convert(
        fmt,
        snapshot / found.weights,
        hf_files,
        home / "converted" / digest,
        settings.renames,
        settings.max_shard_bytes,
        settings.command,
        home / "converted" / "logs" / f"{digest}.log",
    )
    for note in done.notes:
        log.info("%s: converted: %s", found.path, note)
    return done.path, done.converter


@contextmanager
def _run_config(source: Source, listing: list[str], directory: str, home: Path) -> Iterator[Path]:
    """The run's config and tokenizer files in `directory`, copied (never linked) into a scratch folder."""
    from shipyard.intake.convert import HF_SIDE_FILES

    (home / "run-config").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home / "run-config") as scratch:
        for name in HF_SIDE_FILES:
            if in_run(directory, name) in listing:
                source.fetch(directory, name, Path(scratch) / name)
        yield Path(scratch)


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.listdir hands undecodable bytes back as lone surrogates
        return False
    return True
