"""Publishing a candidate as the next release of a line, promoting, rolling back, and pulling a release.

Files go to content-addressed blobs (`blobs/sha256/<digest>`) first, an
unchanged file (tokenizer, config) is never uploaded twice, then a manifest
(files with digests and sizes, lineage, gate decision) is stored as a blob,
and only then does one `released` event name it: a reader never sees a
release whose files are missing. The version comes from the ledger's state at
the moment the event is written, and a candidate already released on the line
is not released again. Promotion and rollback write one event and copy no
weights. Called by the CLI and the release flow.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import DownloadColumn, TransferSpeedColumn

from shipyard.errors import ConfigError, LedgerError, StoreError
from shipyard.ledger import Event, Ledger, Release, State
from shipyard.progress import progress_bar
from shipyard.snapshot import checkpoint_digest, file_digest
from shipyard.stores import Store

MANIFEST_SCHEMA = 1
# Carried inside the manifest, not as release files: post-training lineage, the gate's decision,
# and eval scores ({task: {metric: value}}), each when present in the candidate directory.
METADATA = ("lineage.json", "gate.json", "evals.json")
STABLE = "stable"


@dataclass(frozen=True)
class Published:
    release: Release
    event: Event | None  # the `released` event; None when the candidate already was a release of the line

    @property
    def created(self) -> bool:
        return self.event is not None


def blob_key(digest: str) -> str:
    return f"blobs/sha256/{digest}"


def publish(model_dir: Path, line: str, store: Store, progress: bool = False) -> Published:
    """Publish `model_dir` as the next release of `line`, exactly once; `progress` shows a bar of bytes."""
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"{model_dir}: not a model directory (no config.json)")
    paths = {
        p.relative_to(model_dir).as_posix(): p
        for p in sorted(model_dir.rglob("*"))
        if p.is_file() and p.name not in METADATA and p.name != "gate.md"
    }
    digests = {name: file_digest(path) for name, path in paths.items()}
    candidate = checkpoint_digest(digests)
    ledger = Ledger(store)
    if (existing := ledger.refresh().release_of(line, candidate)) is not None:
        return Published(existing, None)
    missing = [name for name in paths if not store.exists(blob_key(digests[name]))]
    total = sum(paths[name].stat().st_size for name in missing)
    with progress_bar(progress, DownloadColumn(), TransferSpeedColumn()) as bar:
        task = bar.add_task(f"{line}: upload", total=total) if bar else None
        for name in missing:
            step = (lambda n: bar.advance(task, n)) if bar and task is not None else None
            store.put_file(blob_key(digests[name]), paths[name], step)
            stored, size = store.size(blob_key(digests[name])), paths[name].stat().st_size
            if stored != size:  # checked before any event names the blob
                raise StoreError(f"{store.uri}/{blob_key(digests[name])}: {stored} bytes stored, {size} sent ({name})")
    manifest = {
        "schema_version": MANIFEST_SCHEMA,
        "line": line,
        "candidate_digest": candidate,
        "files": {name: {"digest": digests[name], "size": paths[name].stat().st_size} for name in paths},
        **{name.removesuffix(".json"): _json(model_dir / name) for name in METADATA},
    }
    body = json.dumps(manifest, sort_keys=True, indent=1).encode()
    manifest_digest = hashlib.sha256(body).hexdigest()
    store.put_if_absent(blob_key(manifest_digest), body)
    lineage = manifest.get("lineage") or {}

    def build(state: State) -> tuple[str, dict[str, Any]] | None:
        if state.release_of(line, candidate) is not None:
            return None
        data = {
            "line": line,
            "version": state.latest(line) + 1,
            "candidate_digest": candidate,
            "manifest": manifest_digest,
            "checkpoint_digest": lineage.get("checkpoint_digest", ""),
            **{key: lineage[key] for key in ("run", "step", "metrics") if key in lineage},
        }
        return "released", data

    event = ledger.append(build)
    release = ledger.state.release_of(line, candidate)
    assert release is not None
    return Published(release, event)


def promote(store: Store, line: str, version: int, channel: str = STABLE, **note: Any) -> Release:
    """Point `channel` at `version` (one event, no weights copied)."""
    ledger = Ledger(store)

    def build(state: State) -> tuple[str, dict[str, Any]] | None:
        if (line, version) not in state.releases:
            raise ConfigError(f"{store.uri}: line '{line}' has no version {version} (latest {state.latest(line)})")
        if state.channel(line, channel) == version:
            return None
        return "promoted", {"line": line, "channel": channel, "version": version, **note}

    ledger.append(build)
    return ledger.state.releases[(line, version)]


def rollback(store: Store, line: str, channel: str = STABLE, **note: Any) -> Release:
    """Move `channel` back to the version it pointed at before the current one."""
    ledger = Ledger(store)

    def build(state: State) -> tuple[str, dict[str, Any]]:
        history = state.channels.get((line, channel), [])
        current = history[-1] if history else None
        earlier = [v for v in history if v != current]
        if current is None or not earlier:
            raise ConfigError(f"{store.uri}: channel '{channel}' of line '{line}' has nothing to roll back to")
        return "rolled_back", {
            "line": line,
            "channel": channel,
            "from_version": current,
            "to_version": earlier[-1],
            **note,
        }

    ledger.append(build)
    version = ledger.state.channel(line, channel)
    assert version is not None
    return ledger.state.releases[(line, version)]


def resolve(state: State, line: str, ref: str) -> Release:
    """A release by version (`3`, `v3`) or channel name."""
    version = int(ref.removeprefix("v")) if ref.removeprefix("v").isdigit() else state.channel(line, ref)
    if version is None or (line, version) not in state.releases:
        channels = sorted({c for (name, c) in state.channels if name == line})
        raise ConfigError(
            f"line '{line}' has no release or channel '{ref}' (channels: {', '.join(channels) or 'none'})"
        )
    return state.releases[(line, version)]


def manifest(store: Store, release: Release) -> dict[str, Any]:
    body = store.get(blob_key(release.data["manifest"]))
    if body is None:
        raise LedgerError(f"{store.uri}: manifest of {release.line} v{release.version} is missing")
    return dict(json.loads(body))


def pull(store: Store, line: str, ref: str, out: Path) -> Release:
    """Materialize a release in `out`, verifying every file's digest."""
    release = resolve(Ledger(store).refresh(), line, ref)
    files = manifest(store, release)["files"]
    out.mkdir(parents=True, exist_ok=True)
    for name, meta in files.items():
        dest = out / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f".{dest.name}.part")
        store.get_file(blob_key(meta["digest"]), part)
        if file_digest(part) != meta["digest"]:
            part.unlink()
            raise LedgerError(f"{store.uri}/{blob_key(meta['digest'])}: content does not match its digest ({name})")
        os.replace(part, dest)
    return release


def verify(store: Store) -> list[str]:
    """The ledger's chain problems, plus every release whose manifest or file blob is missing."""
    ledger = Ledger(store)
    problems = ledger.verify()
    if problems:
        return problems
    for release in ledger.refresh().releases.values():
        try:
            files = manifest(store, release)["files"]
        except LedgerError as exc:
            problems.append(str(exc))
            continue
        problems += [
            f"{store.uri}: {release.line} v{release.version}: blob of {name} missing"
            for name, meta in files.items()
            if not store.exists(blob_key(meta["digest"]))
        ]
    return problems


def diff(store: Store, line: str, old_ref: str, new_ref: str) -> dict[str, Any]:
    """What changed between two releases: files, the checkpoint, and every eval score (new minus old)."""
    state = Ledger(store).refresh()
    old, new = resolve(state, line, old_ref), resolve(state, line, new_ref)
    a, b = manifest(store, old), manifest(store, new)
    names = sorted(set(a["files"]) | set(b["files"]))
    changed = [n for n in names if a["files"].get(n, {}).get("digest") != b["files"].get(n, {}).get("digest")]
    scores: dict[str, dict[str, float]] = {}
    for task, metrics in (b.get("evals") or {}).items():
        for metric, value in metrics.items():
            before = (a.get("evals") or {}).get(task, {}).get(metric)
            if before is not None and not metric.endswith("_stderr"):
                scores.setdefault(task, {})[metric] = value - before
    return {
        "from": old.version,
        "to": new.version,
        "files_changed": changed,
        "checkpoint": [old.data.get("checkpoint_digest", ""), new.data.get("checkpoint_digest", "")],
        "score_deltas": scores,
    }


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None
