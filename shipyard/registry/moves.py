"""How a protected channel moves: by signed statements that name the head it leaves, never by a bare event.

A protected channel (one the store's policy lists) moves when the n-th
matching signature lands, n being the channel's `required`. A signature
matches when its statement (`approved`, or a `rolled_back` that approves an
earlier release again) names this store, line, channel, version and the
version's manifest, and the channel's head at the time of signing: its
version and the seq of the event that put it there. So a statement signed
before the channel last moved never counts again (no replay, even after the
channel returns to the same version), and a statement signed elsewhere
never counts here. Only each approver's latest word counts; one standing
rejection vetoes (when the policy says so); signatures older than the
policy's `signature_days` before the newest one are left out; a door's key
counts as one person per move unless its rule says `several`; every counted
signature must still speak for its person under the policy in force (a key a
newer policy dropped counts no more); a release is gated only when the
approvers' statements name a gate key of the policy.
Pure functions of the ledger's state, called by its fold and by the writers
that want to say why a channel did not move.
"""

from __future__ import annotations

from typing import Any

from shipyard.registry import signing
from shipyard.registry.approval_policy import vouches
from shipyard.registry.state import State

DAY = 24 * 3600.0


def head_of(state: State, line: str, channel: str) -> tuple[int | None, int]:
    """The channel's head and the seq of the event that put it there ((None, 0) for a channel never moved)."""
    return state.channel(line, channel), state.moved_at.get((line, channel), 0)


def tally(state: State, line: str, channel: str, version: int) -> tuple[list[str], str]:
    """Who moves `channel` to `version` now, or why the signatures on record do not (yet)."""
    policy = state.policy
    assert policy is not None and channel in policy.channels
    rule = policy.channels[channel]
    if state.channel(line, channel) == version:
        return [], f"v{version} is on {channel} already"
    words = state.words(line, version)
    vetoed = sorted(who for who, word in words.items() if word == "rejected" and who in policy.approvers)
    if policy.veto and vetoed:
        return [], f"rejected by {', '.join(vetoed)} (a rejection is a veto)"
    current = statements(state, line, channel, version)
    if not current:
        return [], f"0 of the {rule.required} approval(s) {channel} needs"
    if policy.signature_days is not None:
        newest = max(float(e["signed_at"]) for e in current.values())
        current = {w: e for w, e in current.items() if float(e["signed_at"]) >= newest - policy.signature_days * DAY}
    counted = _people(state, current)
    if len(counted) < rule.required:
        return [], f"{len(counted)} of the {rule.required} approval(s) {channel} needs"
    gates = {signing.fingerprint(k) for k in policy.gate}
    if not rule.allow_ungated and not all(e.get("gated_by") in gates for e in current.values()):
        return [], f"not gated by a key of the policy; the policy keeps ungated releases off {channel}"
    return counted, ""


def waiting(state: State, line: str, channel: str, version: int) -> str:
    """What the release still needs to reach `channel` under the store's policy ("" for an unprotected channel)."""
    if state.policy is None or channel not in state.policy.channels:
        return ""
    return tally(state, line, channel, version)[1]


def statements(state: State, line: str, channel: str, version: int) -> dict[str, dict[str, Any]]:
    """Each approver's latest counted statement moving `channel` from its present head to `version`, by a key
    that still speaks for them."""
    head, since = head_of(state, line, channel)
    latest: dict[str, dict[str, Any]] = {}
    for entry in state.approvals.get((line, version), []):
        if entry["counts"]:
            latest[entry["by"]] = entry
    policy = state.policy
    assert policy is not None
    return {
        who: e
        for who, e in latest.items()
        if e["type"] != "rejected"
        and e.get("channel") == channel
        and e.get("from_version") == head
        and e.get("from_seq") == since
        and vouches(policy, who, str(e.get("door")), signing.fingerprint(e["signature"]["key"]))
    }


def _people(state: State, current: dict[str, dict[str, Any]]) -> list[str]:
    """The people these statements count as: a door's key counts once per move unless its rule says `several`."""
    assert state.policy is not None
    counted, doors_used = [], set()
    for who, entry in sorted(current.items()):
        door = state.policy.doors.get(str(entry.get("door")))
        signer = signing.fingerprint(entry["signature"]["key"])
        if door is not None and signer == signing.fingerprint(door.key) and not door.several:
            if door.key in doors_used:
                continue
            doors_used.add(door.key)
        counted.append(who)
    return counted
