"""Bench: what signatures cost the ledger's fold, against the same log unsigned.

A log of releases, each approved by one approver and promoted to stable
(one event in three a signed approval), folded twice: under a signed policy
(every approval's Ed25519 signature and key checked, every promotion
justified by the approvals) and as an unprotected log of the same events
without signatures (no policy: nothing checked). At 10,000 and 100,000
events, in memory (the fold alone, digests included) and from a local store by a fresh reader
(packs read, the last event of each checked against the log). Medians of 3.
Run: `.venv/bin/python bench/trust.py` (about two minutes).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shipyard.registry.ledger import EVENTS, PACK_EVERY, PACKS, Event, Ledger, event_key, fold, pack_key
from shipyard.registry.policy import Policy, decision, signed_policy
from shipyard.registry.signing import public_line
from shipyard.registry.stores import LocalStore


def log(n: int, signed: bool) -> list[Event]:
    """`n` events: (policy,) then released, approved, promoted for v1, v2, …"""
    owner, ana = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    events: list[Event] = []

    def add(kind: str, data: dict[str, Any]) -> None:
        prev = events[-1].digest if events else ""
        events.append(Event(len(events) + 1, kind, data, 0.0, "bench", prev))

    if signed:
        policy = Policy(owners=[public_line(owner.public_key())], approvers={"ana": [public_line(ana.public_key())]})
        add("policy", signed_policy(policy, [owner], ""))
    version = 0
    while len(events) < n:
        version += 1
        manifest = f"{version:064x}"
        add("released", {"line": "main", "version": version, "candidate_digest": manifest, "manifest": manifest})
        fields = {"line": "main", "version": version, "manifest": manifest, "note": ""}
        add("approved", decision(ana, "approved", "ana", "cli", fields, 0.0) if signed else fields | {"by": "ana"})
        add("promoted", {"line": "main", "channel": "stable", "version": version, "approved_by": ["ana"]})
    return events[:n]


def write(events: list[Event], root: Path) -> LocalStore:
    for directory in (EVENTS, PACKS):
        (root / directory).mkdir(parents=True)
    for start in range(0, len(events), PACK_EVERY):
        chunk = events[start : start + PACK_EVERY]
        for event in chunk:
            (root / event_key(event.seq)).write_bytes(event.body())
        if len(chunk) == PACK_EVERY:
            (root / pack_key(chunk[-1].seq)).write_bytes(b"\n".join(e.body() for e in chunk))
    return LocalStore(root)


def fresh_copy(events: list[Event]) -> list[Event]:
    """The events without their cached digests, as a reader that just parsed them has them."""
    return [Event(e.seq, e.type, e.data, e.at, e.nonce, e.prev) for e in events]


def median_seconds(fn: Any, rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (10_000, 100_000):
            for signed in (False, True):
                label = f"{n}_{'signed' if signed else 'unsigned'}"
                events = log(n, signed)
                state = fold(events)
                assert state.ignored == {} and len(state.channels[("main", "stable")]) >= n // 3 - 1
                result[f"fold_{label}_events_per_s"] = round(n / median_seconds(lambda e=events: fold(fresh_copy(e))))
                store = write(events, Path(tmp) / label)
                fresh = median_seconds(lambda s=store: Ledger(s).refresh())
                result[f"fresh_reader_{label}_events_per_s"] = round(n / fresh)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
