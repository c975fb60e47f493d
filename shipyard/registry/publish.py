"""Publishing a candidate as the next release of a line, promoting, rolling back, and pulling a release.

Files go to content-addressed blobs (`blobs/sha256/<digest>`) first, an
unchanged file (tokenizer, config) is never uploaded twice, then a manifest
(files with digests and sizes, lineage, gate decision) is stored as a blob,
and only then does one `released` event name it: a reader never sees a
release whose files are missing. The version comes from the ledger's state at
the moment the event is written, and a candidate already released on the line
is not released again. Only a candidate whose gate decision passed and names
its digest is published, unless the publisher records why not (`ungated`);
where the store's policy names gate keys, the verdict must be signed by one
(a hand-written `gate.json` is refused). Trainer pickles are never
published. Every read of a manifest checks its digest, and `pull` writes
only files it created, and only inside its output directory. Promotion
writes one event and copies no weights. Called by the CLI and the release
flow.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from rich.progress import DownloadColumn, TransferSpeedColumn

from shipyard.checkpoints import is_trainer_pickle
from shipyard.digests import checkpoint_digest, file_digest, file_digests, hash_file
from shipyard.errors import ConfigError, LedgerError, NotFound, StoreError, TrustError
from shipyard.model_dir import require_model_dir
from shipyard.progress import progress_bar
from shipyard.registry import deltas
from shipyard.registry.approval_policy import ApprovalPolicy, check_root, gate_signer, stream_of_verdict
from shipyard.registry.attest import ATTESTATIONS, attested
from shipyard.registry.ledger import Event, Ledger
from shipyard.registry.state import Release, State
from shipyard.registry.stores import Store

MANIFEST_SCHEMA = 1
# Carried inside the manifest, not as release files: post-training lineage, the gate's decision,
# eval scores ({task: {metric: value}}), and the raw checkpoint's per-item screening results (what later
# checkpoints are screened against), each when present in the candidate directory.
SCREENING = "screening.json"
METADATA = ("lineage.json", "gate.json", "evals.json", SCREENING)
STABLE = "stable"
MAX_MANIFEST_BYTES = 64 << 20  # a manifest lists files and scores; a bigger object in its place is not read whole


@dataclass(frozen=True)
class Published:
    release: Release
    event: Event | None  # the `released` event; None when the candidate already was a release of the line

    @property
    def created(self) -> bool:
        return self.event is not None


def blob_key(digest: str) -> str:
    return f"blobs/sha256/{digest}"


def release_files(model_dir: Path) -> dict[str, Path]:
    """The files a release of `model_dir` holds: not the metadata carried in the manifest, never trainer pickles."""
    return {
        p.relative_to(model_dir).as_posix(): p
        for p in sorted(model_dir.rglob("*"))
        if p.is_file() and p.name not in (*METADATA, "gate.md") and not is_trainer_pickle(p.name)
    }


def model_digest(model_dir: Path) -> str:
    """The candidate digest a release of `model_dir` would have; the gate names it in its decision."""
    files = release_files(model_dir)
    return checkpoint_digest(dict(zip(files, file_digests(list(files.values())), strict=True)))


def candidate_of(body: dict[str, Any]) -> str:
    """The candidate digest of a manifest's own file list: what a gate verdict must name (never an event's claim)."""
    return checkpoint_digest({name: str(meta.get("digest")) for name, meta in body["files"].items()})


def gate_of(policy: ApprovalPolicy | None, body: dict[str, Any]) -> tuple[str | None, str]:
    """Who signed the passing gate verdict of a release's manifest (a gate key of `policy`), or why no one did."""
    if body.get("ungated") is not None:
        return None, f"published ungated: {body['ungated']}"
    return gate_signer(policy, body.get("gate"), candidate_of(body))


def gate_problem(model_dir: Path, candidate: str) -> str:
    """Why the gate decision in `model_dir` does not let this candidate be published ("" if it does)."""
    gate = _json(model_dir / "gate.json")
    if not isinstance(gate, dict):
        return "no gate decision (gate.json)"
    if gate.get("passed") is not True:
        return "its gate decision failed"
    if gate.get("candidate_digest") != candidate:
        return (
            f"the gate decided on {str(gate.get('candidate_digest'))[:16]}…, not on this candidate ({candidate[:16]}…)"
        )
    return ""


def publish(
    model_dir: Path,
    line: str,
    store: Store,
    progress: bool = False,
    ungated: str | None = None,
    ledger: Ledger | None = None,
    release_key: Path | None = None,
) -> Published:
    """Publish `model_dir` as the next release of `line`, exactly once; `progress` shows a bar of bytes.

    The candidate must carry a passed gate decision naming its digest, unless `ungated` says why it does not
    (recorded in the release; the signed policy may keep such releases off protected channels). With a
    `release_key` the release carries a Model Signing bundle and in-toto provenance (`shipyard.registry.attest`).
    """
    require_model_dir(model_dir)
    if ungated is not None and not ungated.strip():
        raise ConfigError("an ungated release needs a reason (--reason)")
    paths = release_files(model_dir)
    digests = dict(zip(paths, file_digests(list(paths.values())), strict=True))
    candidate = checkpoint_digest(digests)
    ledger = ledger or Ledger(store)
    state = ledger.refresh()
    if (existing := state.release_of(line, candidate)) is not None:  # whatever its gate says now: nothing to write
        return Published(existing, None)
    if ungated is None and (why := gate_problem(model_dir, candidate)):
        raise TrustError(f"{model_dir}: not published: {why}; gate it, or publish --ungated --reason TEXT")
    if ungated is None and state.policy is not None and state.policy.gate:
        signer, why = gate_signer(state.policy, _json(model_dir / "gate.json"), candidate)
        if signer is None:
            hint = "sign it with the pipeline's gate key (trust.gate_key)"
            raise TrustError(f"{model_dir}: not published: {why}; {hint}")
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
        **({"ungated": ungated} if ungated is not None else {}),
    }
    if patches := _deltas(store, state, line, paths, digests):
        manifest["deltas"] = patches
    if release_key is not None:
        manifest["attestations"] = _attestations(store, paths, digests, manifest, release_key)
    body = json.dumps(manifest, sort_keys=True, indent=1).encode()
    manifest_digest = hashlib.sha256(body).hexdigest()
    store.put_if_absent(blob_key(manifest_digest), body)
    lineage = manifest.get("lineage") or {}
    streamed = stream_of_verdict(gate) if isinstance(gate := manifest.get("gate"), dict) else {}

    def build(state: State) -> tuple[str, dict[str, Any]] | None:
        if state.release_of(line, candidate) is not None:
            return None
        data = {
            "line": line,
            "version": state.latest(line) + 1,
            "candidate_digest": candidate,
            "manifest": manifest_digest,
            "checkpoint_digest": lineage.get("checkpoint_digest", ""),
            **{key: lineage[key] for key in ("run", "step", "metrics", "screen") if key in lineage},
            **streamed,  # the gate decision's place in the line's stream, with the verdict that signs it
            **({"ungated": ungated} if ungated is not None else {}),
        }
        return "released", data

    event = ledger.append(build)
    release = ledger.state.release_of(line, candidate)
    assert release is not None
    return Published(release, event)


def _deltas(
    store: Store, state: State, line: str, paths: dict[str, Path], digests: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """For each safetensors file that changed since the line's latest release, a delta against that release's file
    of the same name, stored once as a content-addressed blob: what `pull --from` fetches instead of the file. A
    delta that saves less than a tenth of the file is not kept."""
    latest = state.latest(line)
    if not latest:
        return {}
    before = manifest(store, state.releases[(line, latest)])["files"]
    patches = {}
    for name, path in paths.items():
        old = before.get(name)
        if not name.endswith(".safetensors") or not isinstance(old, dict) or old.get("digest") == digests[name]:
            continue
        with tempfile.TemporaryDirectory(prefix="shipyard-delta-") as tmp:
            base, delta = Path(tmp) / "base", Path(tmp) / "delta"
            store.get_file(blob_key(str(old["digest"])), base)
            if hash_file(base) != old["digest"] or not deltas.encode(base, path, delta):
                continue  # a blob that lost its content gives no delta; the file is there whole
            if delta.stat().st_size > 0.9 * path.stat().st_size:
                continue
            digest = hash_file(delta)
            if not store.exists(blob_key(digest)):
                store.put_file(blob_key(digest), delta)
            patches[name] = {"base": old["digest"], "digest": digest, "size": delta.stat().st_size, "from": latest}
    return patches


def _attestations(
    store: Store, paths: dict[str, Path], digests: dict[str, str], manifest: dict[str, Any], key: Path
) -> dict[str, dict[str, Any]]:
    """Sign the release (`attested`), store both attestations as blobs; their manifest entries."""
    entries = {}
    with attested(paths, digests, manifest, key) as made:
        for name, path in made.items():
            digest = hash_file(path)
            store.put_file(blob_key(digest), path)
            entries[name] = {"digest": digest, "size": path.stat().st_size}
    return entries


def promote(
    store: Store, line: str, version: int, channel: str = STABLE, ledger: Ledger | None = None, **note: Any
) -> Release:
    """Point `channel` at `version` (one event, no weights copied)."""
    ledger = ledger or Ledger(store)

    def build(state: State) -> tuple[str, dict[str, Any]] | None:
        if (line, version) not in state.releases:
            raise NotFound(f"{store.uri}: line '{line}' has no version {version} (latest {state.latest(line)})")
        if state.channel(line, channel) == version:
            return None
        return "promoted", {"line": line, "channel": channel, "version": version, **note}

    ledger.append(build)
    return ledger.state.releases[(line, version)]


def resolve(state: State, line: str, ref: str) -> Release:
    """A release by version (`3`, `v3`) or channel name."""
    version = int(ref.removeprefix("v")) if ref.removeprefix("v").isdigit() else state.channel(line, ref)
    if version is None or (line, version) not in state.releases:
        channels = sorted({c for (name, c) in state.channels if name == line})
        hint = f"; did you mean '{close[0]}'?" if (close := difflib.get_close_matches(ref, channels, n=1)) else ""
        raise NotFound(
            f"line '{line}' has no release or channel '{ref}'{hint} (channels: {', '.join(channels) or 'none'})"
        )
    return state.releases[(line, version)]


def require_store(state: State, uri: str) -> None:
    """Refuse a store that holds no ledger: a mistyped path or bucket reads as one."""
    if state.events == 0:
        raise NotFound(f"{uri}: no release store here (no ledger); check --store or release.store", store=uri)


def require_line(state: State, line: str, uri: str) -> None:
    """Refuse a line with no releases, naming the lines there are."""
    if state.latest(line):
        return
    lines = sorted({name for name, _ in state.releases})
    hint = f"; did you mean '{close[0]}'?" if (close := difflib.get_close_matches(line, lines, n=1)) else ""
    raise NotFound(
        f"{uri}: line '{line}' has no releases{hint} (lines: {', '.join(lines) or 'none yet'})", store=uri, line=line
    )


def manifest(store: Store, release: Release) -> dict[str, Any]:
    """The release's manifest, checked against the digest its `released` event names."""
    key = blob_key(str(release.data["manifest"]))
    body = store.get(key, MAX_MANIFEST_BYTES)
    if body is None:
        raise LedgerError(f"{store.uri}/{key}: manifest of {release.line} v{release.version} is missing")
    if len(body) > MAX_MANIFEST_BYTES:
        raise LedgerError(f"{store.uri}/{key}: manifest of {release.line} v{release.version} is over 64 MiB")
    if hashlib.sha256(body).hexdigest() != release.data["manifest"]:
        raise LedgerError(f"{store.uri}/{key}: manifest of {release.line} v{release.version} does not match its digest")
    data = json.loads(body)
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise LedgerError(f"{store.uri}/{key}: manifest of {release.line} v{release.version} has no file list")
    for name in data["files"]:
        if why := unsafe_name(name):
            raise LedgerError(f"{store.uri}/{key}: {release.line} v{release.version}: file name {name!r} {why}")
    if not set(data.get("attestations") or {}) <= set(ATTESTATIONS) or set(data["files"]) & set(ATTESTATIONS):
        raise LedgerError(f"{store.uri}/{key}: {release.line} v{release.version}: unknown or clashing attestations")
    return data


def unsafe_name(name: str) -> str:
    """Why a file name from a manifest may not be written under an output directory ("" if it may)."""
    path = PurePosixPath(name)
    if not name or "\\" in name or "\0" in name or path.is_absolute():
        return "is empty, absolute, or holds a backslash or NUL"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "leaves the release directory (.. or empty parts)"
    return ""


@dataclass
class Pulled:
    """What a pull fetched: bytes over the network against the release's size, and how each file was made."""

    release: Release
    bytes_total: int = 0
    bytes_fetched: int = 0
    how: dict[str, str] = field(default_factory=dict)  # name -> "fetched" | "kept" | "delta" | "fetched: why"


def pull(store: Store, line: str, ref: str, out: Path, base: Path | None = None) -> Pulled:
    """Materialize a release in `out`, verifying every file's digest; no name may leave `out`.

    Each file is downloaded into a private directory this call creates inside `out` (so nothing planted in `out`
    is ever written through), checked, and renamed into place relative to directory handles opened without
    following links: a link planted at any name of the release is replaced, never followed.

    With `base`, a local copy of an earlier release, a file whose content `base` already holds is copied from it,
    and a safetensors file the release has a delta for (against the file of the same name in `base`) is built from
    it plus the delta (`shipyard.registry.deltas`). A file built so is checked against the manifest's digest like
    any other; one that does not verify is fetched whole, and `how` says why.
    """
    release = resolve(Ledger(store).refresh(), line, ref)
    body = manifest(store, release)
    files = body["files"] | (body.get("attestations") or {})
    pulled = Pulled(release, bytes_total=sum(int(meta.get("size", 0)) for meta in files.values()))
    patches = body.get("deltas") or {}
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".shipyard-pull-", dir=out))
    staging_fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    out_fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for number, (name, meta) in enumerate(files.items()):
            part = staging / str(number)
            _fetch(store, name, meta, patches.get(name), base, part, pulled)  # checked against its digest
            *folders, leaf = name.split("/")
            parent = _folder(out_fd, folders, out)
            try:
                os.rename(str(number), leaf, src_dir_fd=staging_fd, dst_dir_fd=parent)
            except IsADirectoryError:
                raise LedgerError(f"{out}/{name}: a directory is in the way") from None
            finally:
                os.close(parent)
    finally:
        os.close(out_fd)
        os.close(staging_fd)
        shutil.rmtree(staging, ignore_errors=True)
    return pulled


def _fetch(
    store: Store, name: str, meta: dict[str, Any], patch: Any, base: Path | None, part: Path, pulled: Pulled
) -> None:
    """Make the file `name` at `part`, hashed against the manifest's digest: kept from `base`, built from `base`
    and its delta, or fetched whole (when the others do not verify too). A fetched file that does not match its
    digest is a `LedgerError`: the store holds something else under that name."""
    digest, why = meta["digest"], ""
    local = base / name if base is not None and ".." not in PurePosixPath(name).parts else None
    held = file_digest(local) if local is not None and local.is_file() else None  # cached if seen before
    if local is not None and held == digest:
        shutil.copyfile(local, part)
        if hash_file(part) == digest:
            pulled.how[name] = "kept"
            return
        why = "the local copy changed since its digest was taken"
    elif local is not None and isinstance(patch, dict) and held == patch.get("base"):
        try:
            delta = part.with_name(part.name + ".delta")
            store.get_file(blob_key(str(patch["digest"])), delta)
            pulled.bytes_fetched += delta.stat().st_size
            if hash_file(delta) != patch["digest"]:
                raise LedgerError(f"{store.uri}/{blob_key(str(patch['digest']))}: content does not match its digest")
            deltas.apply(local, delta, part)
            delta.unlink()
            if hash_file(part) == digest:
                pulled.how[name] = "delta"
                return
            why = "its delta built a file that does not match the manifest"
        except (LedgerError, StoreError, KeyError) as exc:
            why = f"its delta did not apply ({exc})"
    store.get_file(blob_key(digest), part)
    pulled.bytes_fetched += part.stat().st_size
    if hash_file(part) != digest:
        raise LedgerError(f"{store.uri}/{blob_key(digest)}: content does not match its digest ({name})")
    pulled.how[name] = f"fetched: {why}" if why else "fetched"


def _folder(top: int, folders: list[str], out: Path) -> int:
    """A handle on `out`/`folders`, made where missing, each step opened without following a link."""
    fd = os.dup(top)
    for index, folder in enumerate(folders):
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o755, dir_fd=fd)
        try:
            inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except OSError:
            os.close(fd)
            where = "/".join(folders[: index + 1])
            raise LedgerError(f"{out}/{where}: a link or a file, not a folder of the release; not followed") from None
        os.close(fd)
        fd = inner
    return fd


def verify(store: Store, deep: bool = False, pins: list[str] | None = None, allow_unpinned: bool = False) -> list[str]:
    """The ledger's problems, plus every release whose manifest is missing or altered or whose blobs are missing.

    `deep` re-hashes every blob a release names; `pins` are the reader's owner fingerprints, checked against the
    root as every reader checks them (`check_root`); None checks the chain alone.
    """
    ledger = Ledger(store)
    problems = ledger.verify()
    problems += [
        f"{store.uri}/{key}: overwritten or deleted (the store keeps its versions)"
        for key in store.rewritten("ledger/")
    ]
    try:
        state = ledger.refresh()
    except LedgerError:
        return problems  # the chain is broken; verify named where
    try:
        if pins is not None:
            check_root(state.root, pins, store.uri, allow_unpinned)
    except TrustError as exc:
        problems.append(str(exc))
    for release in state.releases.values():
        try:
            files = manifest(store, release)["files"]
        except LedgerError as exc:
            problems.append(str(exc))
            continue
        for name, meta in files.items():
            key = blob_key(str(meta.get("digest")))
            if not store.exists(key):
                problems.append(f"{store.uri}/{key}: {release.line} v{release.version}: blob of {name} missing")
            elif deep and _stored_digest(store, key) != meta.get("digest"):
                problems.append(f"{store.uri}/{key}: {release.line} v{release.version}: {name} differs from its digest")
    return problems


def _stored_digest(store: Store, key: str) -> str:
    with tempfile.TemporaryDirectory(prefix="shipyard-verify-") as tmp:
        path = Path(tmp) / "blob"
        store.get_file(key, path)
        return hash_file(path)


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
