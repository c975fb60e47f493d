"""What the ledger says now: the fold of its events (`shipyard.registry.ledger.fold`), as data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shipyard.registry.approval_policy import ApprovalPolicy


@dataclass(frozen=True)
class Release:
    line: str
    version: int
    candidate_digest: str
    data: dict[str, Any]
    seq: int
    at: float


@dataclass
class State:
    """What the log says now: releases per line, channel history, approvals, the policy in force."""

    releases: dict[tuple[str, int], Release] = field(default_factory=dict)
    channels: dict[tuple[str, str], list[int]] = field(
        default_factory=dict
    )  # (line, channel) -> versions, oldest first
    approvals: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)  # decisions, with "counts"
    moved_at: dict[tuple[str, str], int] = field(default_factory=dict)  # (line, channel) -> seq that set its head
    mirrors: list[dict[str, Any]] = field(default_factory=list)  # data of `mirrored` events
    events: int = 0  # the sequence number of the last event folded in
    head: str = ""  # its digest
    policy: ApprovalPolicy | None = None  # the signed policy in force; None before the first
    root: list[str] = field(default_factory=list)  # owner fingerprints of the first policy
    store_id: str = ""  # digest of the first policy event: decisions name it, so they count in no other store
    ignored: dict[int, str] = field(default_factory=dict)  # seq -> why the event does not count
    fates: set[tuple[str, ...]] = field(default_factory=set)  # (line, kind, checkpoint uri, digest, reason) recorded
    _by_candidate: dict[tuple[str, str], Release] = field(default_factory=dict, repr=False)
    _latest: dict[str, int] = field(default_factory=dict, repr=False)

    def add_release(self, release: Release) -> None:
        self.releases[(release.line, release.version)] = release
        self._by_candidate[(release.line, release.candidate_digest)] = release
        self._latest[release.line] = max(self._latest.get(release.line, 0), release.version)

    def words(self, line: str, version: int) -> dict[str, str]:
        """Each approver's latest counted word on the release (approved or rejected; a signed rollback approves)."""
        return {
            e["by"]: "rejected" if e["type"] == "rejected" else "approved"
            for e in self.approvals.get((line, version), [])
            if e["counts"]
        }

    def latest(self, line: str) -> int:
        return self._latest.get(line, 0)

    def release_of(self, line: str, candidate_digest: str) -> Release | None:
        return self._by_candidate.get((line, candidate_digest))

    def channel(self, line: str, channel: str) -> int | None:
        history = self.channels.get((line, channel), [])
        return history[-1] if history else None
