"""Mirroring releases to a Hugging Face Hub model repo, replayed from the ledger.

For each release of the line not yet mirrored: one `create_commit` (weights,
`manifest.json`, `README.md` model card) with `parent_commit` set to the head
it read, then a tag `v<version>`, then a `mirrored` event. A crash between the
Hub and the ledger is caught up on the next run: a release whose tag already
exists is recorded, not committed again. Channels become branches, moved to
their release's tag on promotion and rollback. Not `upload_folder`: it may
split a release into several commits. Called by `shipyard mirror`, and by the
release, approval and rollback flows when `hub.mirror_repo` is set.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from logging import Logger, LoggerAdapter
from pathlib import Path
from typing import Any

from shipyard.registry.card import model_card
from shipyard.registry.ledger import Ledger
from shipyard.registry.publish import blob_key, manifest
from shipyard.registry.state import State
from shipyard.registry.stores import Store
from shipyard.settings import Settings

EXTRA = ("manifest.json", "README.md")


def mirror(store: Store, line: str, repo_id: str, endpoint: str | None = None) -> list[int]:
    """Mirror what the ledger has and the Hub lacks; return the versions committed or recorded now."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi(endpoint=endpoint)
    api.create_repo(repo_id, exist_ok=True)
    ledger = Ledger(store)
    state = ledger.refresh()
    done = _mirrored(state, line, repo_id)
    tags = {t.name: t.target_commit for t in api.list_repo_refs(repo_id).tags}
    now = []
    for (name, version), release in sorted(state.releases.items()):
        if name != line or version in done:
            continue
        tag = f"v{version}"
        if tag not in tags:  # else: committed before a crash, the event was not written
            files = manifest(store, release)
            previous = (
                manifest(store, state.releases[(line, version - 1)]) if (line, version - 1) in state.releases else None
            )
            head = api.model_info(repo_id).sha
            with tempfile.TemporaryDirectory() as tmp:
                adds = []
                for path, meta in files["files"].items():
                    local = Path(tmp) / meta["digest"]
                    store.get_file(blob_key(meta["digest"]), local)
                    adds.append(CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(local)))
                adds.append(CommitOperationAdd("manifest.json", json.dumps(files, indent=1).encode()))
                adds.append(CommitOperationAdd("README.md", model_card(line, version, files, previous).encode()))
                stale = set(previous["files"]) - set(files["files"]) if previous else set()
                ops: list[Any] = [*adds, *(CommitOperationDelete(p) for p in sorted(stale))]
                info = api.create_commit(repo_id, ops, commit_message=f"{line} {tag}", parent_commit=head)
            api.create_tag(repo_id, tag=tag, revision=info.oid)
            tags[tag] = info.oid
        ledger.append(_record(line, version, repo_id, tags[tag]))
        now.append(version)
    _move_channels(api, repo_id, ledger.state, line, tags)
    return now


def mirror_configured(settings: Settings, store: Store, line: str, log: Logger | LoggerAdapter[Any]) -> None:
    """Mirror `line` into `hub.mirror_repo`, if one is set, and log what was done. A failure is a warning, not
    an error: the release stands, and the next mirror (any flow's, or `shipyard mirror`) catches it up."""
    repo = settings.hub.mirror_repo
    if repo is None:
        return
    try:
        done = mirror(store, line, repo, settings.hub.endpoint)
    except Exception as exc:  # the Hub or the network: nothing in the store depends on the mirror
        log.warning("mirror to %s failed (%s: %s); the next mirror catches it up", repo, type(exc).__name__, exc)
        return
    versions = ", ".join(f"v{v}" for v in done) or "nothing new"
    log.info("mirrored %s to %s; its branches follow the channels", versions, repo)


def _record(line: str, version: int, repo_id: str, commit: str) -> Callable[[State], tuple[str, dict[str, Any]] | None]:
    def build(state: State) -> tuple[str, dict[str, Any]] | None:
        if version in _mirrored(state, line, repo_id):
            return None
        return "mirrored", {"line": line, "version": version, "repo": repo_id, "commit": commit}

    return build


def _mirrored(state: State, line: str, repo_id: str) -> set[int]:
    return {e["version"] for e in state.mirrors if e["line"] == line and e["repo"] == repo_id}


def _move_channels(api: Any, repo_id: str, state: State, line: str, tags: dict[str, str]) -> None:
    branches = {b.name: b.target_commit for b in api.list_repo_refs(repo_id).branches}
    for (name, channel), history in state.channels.items():
        target = tags.get(f"v{history[-1]}")
        if name != line or target is None or branches.get(channel) == target:
            continue
        if channel in branches:
            api.delete_branch(repo_id, branch=channel)
        api.create_branch(repo_id, branch=channel, revision=target)
