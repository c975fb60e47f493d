"""The event vocabulary: what a ledger event records, and what a person decides on a release.

Shared by every stage (the watcher records a checkpoint's fate, the registry folds events, the doors record
decisions), so it lives in the core and imports nothing of Shipyard's.
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    """What a ledger event records: the policy, a release and its channel moves and decisions, or a fate."""

    POLICY = "policy"
    RELEASED = "released"
    APPROVED = "approved"
    REJECTED = "rejected"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    MIRRORED = "mirrored"
    SKIPPED = "skipped"  # a checkpoint passed over: by the selection policy, or screened out
    REFUSED = "refused"  # a checkpoint that failed validation
    GATE_FAILED = "gate_failed"
    FAILED = "failed"  # a checkpoint whose release run failed (a stage failed), or crashed past its retries
    MALFORMED = "malformed"  # never written: what a reader calls a slot that holds no event it can read


WRITTEN = tuple(t for t in EventType if t is not EventType.MALFORMED)  # the types an event may be written with


class Decision(StrEnum):
    """A person's decision on a release, through any door."""

    APPROVE = "approve"
    REJECT = "reject"
