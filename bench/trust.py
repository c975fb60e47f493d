"""Bench: what signatures cost the ledger's fold, against the same log unsigned.

A log of releases, each approved by one approver, which moves stable, and a
`promoted` event announcing it (one event in three a signed statement),
folded twice: under a signed policy (every statement's Ed25519 signature,
store, channel, the head it leaves and the gate key checked; the move
tallied) and as an unprotected log of the same events without signatures (no
policy: nothing checked). At 10,000 and 100,000 events, in memory (the fold
alone, digests included) and from a local store by a fresh reader (packs
read, the last event of each checked against the log). Medians of 3.
`--before COMMIT` also runs this file as it was at COMMIT, in a git worktree
of that commit, on this machine right after: the fold before a change, side
by side. Run: `.venv/bin/python bench/trust.py [--before COMMIT]` (about two
minutes a side).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shipyard.registry.approval_policy import ApprovalPolicy, decision, signed_policy
from shipyard.registry.ledger import EVENTS, PACK_EVERY, PACKS, Event, Ledger, event_key, fold, pack_key
from shipyard.registry.signing import fingerprint, public_line
from shipyard.registry.stores import LocalStore


def log(n: int, signed: bool) -> list[Event]:
    """`n` events: (policy,) then released, approved (which moves stable when signed), promoted for v1, v2, …"""
    owner, ana, gate = (Ed25519PrivateKey.generate() for _ in range(3))
    events: list[Event] = []

    def add(kind: str, data: dict[str, Any]) -> None:
        prev = events[-1].digest if events else ""
        events.append(Event(len(events) + 1, kind, data, 0.0, "bench", prev))

    if signed:
        policy = ApprovalPolicy(
            owners=[public_line(owner.public_key())],
            approvers={"ana": [public_line(ana.public_key())]},
            gate=[public_line(gate.public_key())],
        )
        add("policy", signed_policy(policy, [owner], ""))
    store, gated_by = (events[0].digest, fingerprint(public_line(gate.public_key()))) if signed else ("", "")
    version, head, since = 0, None, 0
    while len(events) < n:
        version += 1
        manifest = f"{version:064x}"
        add("released", {"line": "main", "version": version, "candidate_digest": manifest, "manifest": manifest})
        fields = {"line": "main", "version": version, "manifest": manifest, "note": ""}
        move = {"store": store, "channel": "stable", "from_version": head, "from_seq": since, "gated_by": gated_by}
        add(
            "approved",
            decision(ana, "approved", "ana", "cli", fields | move, 0.0) if signed else fields | {"by": "ana"},
        )
        head, since = version, events[-1].seq
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


def measure() -> dict[str, float]:
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
    return result


def before(commit: str) -> dict[str, float]:
    """This bench as it was at `commit`, run on that commit's code in a git worktree."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(tree), commit], check=True)
        try:
            env = os.environ | {"PYTHONPATH": str(tree)}
            done = subprocess.run(
                [sys.executable, str(tree / "bench" / "trust.py")], env=env, cwd=tree, capture_output=True, text=True
            )
            if done.returncode:
                raise SystemExit(done.stderr)
            return dict(json.loads(done.stdout))
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(tree)], check=True)


def main() -> None:
    result: dict[str, Any] = {"now": measure()}
    if "--before" in sys.argv:
        commit = sys.argv[sys.argv.index("--before") + 1]
        result["before"] = then = before(commit)
        result["now_over_before"] = {k: round(v / then[k], 2) for k, v in result["now"].items() if k in then}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
