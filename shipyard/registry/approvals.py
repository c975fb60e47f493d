"""Approvals: a person approves or rejects a release, signed; enough distinct approvals promote it.

Every door (CLI, dashboard, Prefect form) ends here, in one signed ledger
event: the person's own key (CLI), or the key of a door that authenticated
them (dashboard, Prefect form). What counts is decided by the signed policy in
the store (`shipyard.registry.approval_policy`), never by the caller's settings: each decision is
checked against it before it is written, so an honest door never writes an
event that readers would ignore. An approval is a compare-and-swap statement
(`shipyard.registry.moves`): it names the channel's head it leaves and who
signed the release's gate verdict (read from the signed manifest here, by the
signer's own tool); the n-th matching one moves the channel, and a
`promoted` event announces it. A rollback is the same signed move towards an
earlier release. Called by the doors, the approval flow and the CLI.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shipyard.errors import ConfigError, Conflict, LedgerError, NotFound, TrustError
from shipyard.registry import moves, publish, signing
from shipyard.registry.approval_policy import ApprovalPolicy, decision, decision_problem
from shipyard.registry.ledger import Event, Ledger
from shipyard.registry.state import Release, State
from shipyard.registry.stores import Store


@dataclass(frozen=True)
class Signer:
    """Who decides, and the key that vouches for it: their own (door "cli") or a door's that authenticated them."""

    who: str
    key: Ed25519PrivateKey
    door: str = "cli"


def person(policy: ApprovalPolicy | None, key: Ed25519PrivateKey, claimed: str | None = None) -> Signer:
    """The approver a private key belongs to under `policy`; `claimed` (`--as`) must agree."""
    fp = signing.fingerprint(signing.public_line(key.public_key()))
    who = policy.approver_with(fp) if policy else None
    if policy is None:
        raise TrustError(f"the store has no signed policy, so no decision can count; {PROTECT}")
    if who is None:
        raise TrustError(f"key {fp} belongs to no approver in policy v{policy.version} (approvers: {_names(policy)})")
    if claimed is not None and claimed != who:
        raise TrustError(f"key {fp} is {who}'s, not {claimed}'s")
    return Signer(who, key)


def _names(policy: ApprovalPolicy) -> str:
    return ", ".join(sorted(policy.approvers)) or "none"


def _policy(state: State) -> ApprovalPolicy:
    if state.policy is None:
        raise TrustError(f"the store has no signed policy, so no decision can count; {PROTECT}")
    return state.policy


PROTECT = "protect it: shipyard policy set POLICY.yaml --key OWNER.key"
OPEN_STORE_CHANNELS = ("stable",)  # what no command moves on an open store unless the reader's settings say otherwise


def open_store_notice(state: State, uri: str) -> str | None:
    """The one line every channel move on a store with no signed policy says, or None if the store is protected."""
    if state.policy is not None:
        return None
    return f"{uri} is an open store: no signed policy, so anyone who can write to it can move any channel; {PROTECT}"


def _refuse_open(state: State, uri: str, channel: str, refuses: Collection[str]) -> None:
    if state.policy is None and channel in refuses:
        raise TrustError(
            f"{uri}: {channel} does not move on an open store (no signed policy: any writer could move it); {PROTECT}"
            f" (trust.open_store_refuses lists the channels refused there)"
        )


def _release(state: State, line: str, version: int) -> Release:
    release = state.releases.get((line, version))
    if release is None:
        raise NotFound(f"line '{line}' has no version {version} (latest {state.latest(line)})", line=line)
    return release


def _signed(state: State, kind: str, signer: Signer, fields: dict[str, Any], manifest: str | None) -> dict[str, Any]:
    """A decision's event data, refused here if readers would not count it."""
    policy = _policy(state)
    if signer.who not in policy.approvers:
        raise TrustError(f"'{signer.who}' is not an approver in policy v{policy.version} (approvers: {_names(policy)})")
    data = decision(signer.key, kind, signer.who, signer.door, fields)
    if why := decision_problem(policy, kind, data, manifest, state.store_id):
        raise TrustError(f"{signer.who} ({signer.door}): {why}")
    return data


def gated_by(store: Store, state: State, release: Release) -> str | None:
    """The gate key of the policy that signed a passing verdict on the very files the release's manifest lists
    (the manifest the approver signs; never the candidate digest an event claims); else None."""
    try:
        return publish.gate_of(state.policy, publish.manifest(store, release))[0]
    except LedgerError:
        return None


def _statement(store: Store, state: State, line: str, version: int, channel: str) -> dict[str, Any]:
    """What a move's signer signs: this store, the release and its manifest, the channel and the head it leaves."""
    release = _release(state, line, version)
    head, since = moves.head_of(state, line, channel)
    return {
        "store": state.store_id,
        "line": line,
        "version": version,
        "manifest": release.data.get("manifest"),
        "channel": channel,
        "from_version": head,
        "from_seq": since,
        "gated_by": gated_by(store, state, release),
    }


def approvers_of(state: State, line: str, version: int) -> list[str]:
    """Distinct identities whose latest counted word on the release is an approval."""
    return sorted(who for who, word in state.words(line, version).items() if word == "approved")


def approve(
    store: Store, line: str, version: int, signer: Signer, channel: str, note: str = "", ledger: Ledger | None = None
) -> list[Event]:
    """Record a signed approval for `channel`; when it is the n-th the policy asks for, the channel moves with it
    and a `promoted` event announces the move. The events appended.

    Idempotent: approving again while the channel's head is unchanged, or after the move, appends nothing.
    """
    ledger = ledger or Ledger(store)

    def build(state: State) -> tuple[str, dict[str, Any]] | None:
        if state.channel(line, channel) == version:
            return None
        if _standing(state, line, version, channel, signer):
            return None
        fields = _statement(store, state, line, version, channel) | {"note": note}
        return "approved", _signed(
            state, "approved", signer, fields, _release(state, line, version).data.get("manifest")
        )

    approved = ledger.append(build)
    if approved is None:
        return []
    return [approved, *filter(None, [ledger.append(_announce(line, version, channel, approved.seq))])]


def _standing(state: State, line: str, version: int, channel: str, signer: Signer) -> bool:
    """Whether the signer already has a statement moving `channel` to the release from its present head, through
    the same door and not expired under the policy's `signature_days`."""
    days = _policy(state).signature_days
    entry = moves.statements(state, line, channel, version).get(signer.who)
    if entry is None or entry.get("door") != signer.door:
        return False
    return days is None or float(entry["signed_at"]) >= time.time() - days * moves.DAY


def _announce(line: str, version: int, channel: str, seq: int) -> Any:
    """A `promoted` event announcing the move the signed approval at `seq` made (nothing if it made none)."""

    def build(state: State) -> tuple[str, dict[str, Any]] | None:
        if state.channel(line, channel) != version or state.moved_at.get((line, channel)) != seq:
            return None
        by = approvers_of(state, line, version)
        return "promoted", {"line": line, "channel": channel, "version": version, "approved_by": by, "moved_by": seq}

    return build


def reject(
    store: Store, line: str, version: int, signer: Signer, note: str, ledger: Ledger | None = None
) -> Event | None:
    """Record a signed rejection (None if that is the signer's word already); a note saying why is required."""
    if not note.strip():
        raise ConfigError("a rejection needs a note saying why (--note)")

    def build(state: State) -> tuple[str, dict[str, Any]] | None:
        release = _release(state, line, version)
        if state.words(line, version).get(signer.who) == "rejected":
            return None
        manifest = release.data.get("manifest")
        fields = {"store": state.store_id, "line": line, "version": version, "manifest": manifest, "note": note}
        return "rejected", _signed(state, "rejected", signer, fields, manifest)

    return (ledger or Ledger(store)).append(build)


def promote_approved(
    store: Store,
    line: str,
    version: int,
    channel: str,
    ledger: Ledger | None = None,
    refuses: Collection[str] = OPEN_STORE_CHANNELS,
) -> int:
    """Point an unprotected `channel` at the release; a protected one moves only by signed approvals, and one in
    `refuses` not at all while the store has no signed policy."""
    ledger = ledger or Ledger(store)
    state = ledger.refresh()
    _release(state, line, version)
    _refuse_open(state, store.uri, channel, refuses)
    if state.policy is not None and channel in state.policy.channels:
        if state.channel(line, channel) == version:
            return version
        _, why = moves.tally(state, line, channel, version)
        raise TrustError(
            f"{channel} is protected and moves only by signed approvals: {why} (shipyard approve v{version})"
        )
    return publish.promote(store, line, version, channel, ledger).version


def rollback(
    store: Store,
    line: str,
    channel: str,
    signer: Signer | None,
    note: str = "",
    ledger: Ledger | None = None,
    refuses: Collection[str] = OPEN_STORE_CHANNELS,
) -> Release:
    """Move `channel` back to the release before its head; the release on it afterwards. On a protected channel
    this is a signed move like an approval: the policy's `required` signatures, and a rejection vetoes it. A
    channel in `refuses` does not move while the store has no signed policy."""
    ledger = ledger or Ledger(store)

    def build(state: State) -> tuple[str, dict[str, Any]]:
        _refuse_open(state, store.uri, channel, refuses)
        history = state.channels.get((line, channel), [])
        current = history[-1] if history else None
        earlier = [v for v in history if v != current]
        if current is None:
            known = sorted(c for (name, c) in state.channels if name == line)
            shown = ", ".join(known) or "none"
            raise NotFound(f"{store.uri}: line '{line}' has no channel '{channel}' (channels: {shown})")
        if not earlier:
            raise Conflict(f"{store.uri}: {line}'s channel '{channel}' has held only v{current}: nothing to go back to")
        if state.policy is None or channel not in state.policy.channels:
            fields = {"line": line, "channel": channel, "version": earlier[-1], "from_version": current, "note": note}
            return "rolled_back", fields | ({"by": signer.who} if signer else {})
        if signer is None:
            raise TrustError(f"{channel} is protected: a rollback must be signed by an approver (--key)")
        fields = _statement(store, state, line, earlier[-1], channel) | {"note": note}
        return "rolled_back", _signed(
            state, "rolled_back", signer, fields, _release(state, line, earlier[-1]).data.get("manifest")
        )

    event = ledger.append(build)
    assert event is not None
    to = int(event.data["version"])
    if ledger.state.channel(line, channel) != to:
        why = ledger.state.ignored.get(event.seq) or moves.tally(ledger.state, line, channel, to)[1]
        raise TrustError(f"rollback of {channel} to v{to} recorded, not moved: {why}")
    version = ledger.state.channel(line, channel)
    assert version is not None
    return ledger.state.releases[(line, version)]


def settled(state: State, line: str, version: int, channel: str) -> str | None:
    """Why a release awaits no decision any more (on the approval channel, or rejected), or None."""
    if version in state.channels.get((line, channel), []):
        return f"v{version} is on {channel}"
    rejected = [who for who, word in state.words(line, version).items() if word == "rejected"]
    return f"v{version} was rejected by {', '.join(rejected)}" if rejected else None
