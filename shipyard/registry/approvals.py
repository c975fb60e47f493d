"""Approvals: a person approves or rejects a release, signed; enough distinct approvals promote it.

Every door (CLI, dashboard, Prefect form) ends here, in one signed ledger
event: the person's own key (CLI), or the key of a door that authenticated
them (dashboard, Prefect form). What counts is decided by the signed policy in
the store (`shipyard.registry.policy`), never by the caller's settings: each decision is
checked against it before it is written, so an honest door never writes an
event that readers would ignore. With enough distinct approvals and no
standing rejection (a veto, by default), the release is promoted to the
approval channel (one more event, which readers accept only because the
approvals justify it). Called by the doors, the approval flow and the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shipyard.errors import ConfigError, Conflict, NotFound, TrustError
from shipyard.registry import publish, signing
from shipyard.registry.ledger import Event, Ledger, Release, State
from shipyard.registry.policy import Policy, decision, decision_problem, promotion_problem
from shipyard.registry.stores import Store


@dataclass(frozen=True)
class Signer:
    """Who decides, and the key that vouches for it: their own (door "cli") or a door's that authenticated them."""

    who: str
    key: Ed25519PrivateKey
    door: str = "cli"


def person(policy: Policy | None, key: Ed25519PrivateKey, claimed: str | None = None) -> Signer:
    """The approver a private key belongs to under `policy`; `claimed` (`--as`) must agree."""
    fp = signing.fingerprint(signing.public_line(key.public_key()))
    who = policy.approver_with(fp) if policy else None
    if policy is None:
        raise TrustError("the store has no signed policy yet; its owner runs `shipyard policy init`")
    if who is None:
        raise TrustError(f"key {fp} belongs to no approver in policy v{policy.version} (approvers: {_names(policy)})")
    if claimed is not None and claimed != who:
        raise TrustError(f"key {fp} is {who}'s, not {claimed}'s")
    return Signer(who, key)


def _names(policy: Policy) -> str:
    return ", ".join(sorted(policy.approvers)) or "none"


def _policy(state: State) -> Policy:
    if state.policy is None:
        raise TrustError("the store has no signed policy yet; its owner runs `shipyard policy init`")
    return state.policy


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
    if why := decision_problem(policy, kind, data, manifest):
        raise TrustError(f"{signer.who} ({signer.door}): {why}")
    return data


def approvers_of(state: State, line: str, version: int) -> list[str]:
    """Distinct identities whose latest counted word on the release is an approval."""
    return sorted(who for who, word in state.words(line, version).items() if word == "approved")


def approve(
    store: Store, line: str, version: int, signer: Signer, channel: str, note: str = "", ledger: Ledger | None = None
) -> list[Event]:
    """Record a signed approval; promote to `channel` when the policy allows it now. The events appended.

    Idempotent: a second approval by the same person, or one after the promotion, appends nothing.
    """
    ledger = ledger or Ledger(store)
    approved = ledger.append(_word("approved", line, version, signer, note))
    return [event for event in (approved, ledger.append(_promotion(line, version, channel))) if event is not None]


def _promotion(line: str, version: int, channel: str) -> Any:
    def build(state: State) -> tuple[str, dict[str, Any]] | None:
        policy, release = _policy(state), _release(state, line, version)
        words = state.words(line, version)
        if state.channel(line, channel) == version:
            return None
        if promotion_problem(policy, channel, words, bool(release.data.get("ungated"))):
            return None
        by = approvers_of(state, line, version)
        return "promoted", {"line": line, "channel": channel, "version": version, "approved_by": by}

    return build


def reject(
    store: Store, line: str, version: int, signer: Signer, note: str, ledger: Ledger | None = None
) -> Event | None:
    """Record a signed rejection (None if that is the signer's word already); a note saying why is required."""
    if not note.strip():
        raise ConfigError("a rejection needs a note saying why (--note)")
    return (ledger or Ledger(store)).append(_word("rejected", line, version, signer, note))


def _word(kind: str, line: str, version: int, signer: Signer, note: str) -> Any:
    """The ledger builder of one signed word (approved or rejected); nothing if it is the signer's word already."""

    def build(state: State) -> tuple[str, dict[str, Any]] | None:
        release = _release(state, line, version)
        if state.words(line, version).get(signer.who) == kind:
            return None
        manifest = release.data.get("manifest")
        fields = {"line": line, "version": version, "manifest": manifest, "note": note}
        return kind, _signed(state, kind, signer, fields, manifest)

    return build


def promote_approved(store: Store, line: str, version: int, channel: str, ledger: Ledger | None = None) -> int:
    """Point `channel` at the release; a protected channel only when the policy's approvals justify it."""
    ledger = ledger or Ledger(store)
    state = ledger.refresh()
    release = _release(state, line, version)
    if state.policy is not None and channel in state.policy.channels:
        words, ungated = state.words(line, version), bool(release.data.get("ungated"))
        if why := promotion_problem(state.policy, channel, words, ungated):
            raise TrustError(f"v{version} cannot go to {channel}: {why} (shipyard approve v{version})")
        ledger.append(_promotion(line, version, channel))
        return version
    return publish.promote(store, line, version, channel, ledger).version


def rollback(
    store: Store, line: str, channel: str, signer: Signer | None, note: str = "", ledger: Ledger | None = None
) -> Release:
    """Move `channel` back to the release before its head; a protected channel needs an approver's signature."""
    ledger = ledger or Ledger(store)

    def build(state: State) -> tuple[str, dict[str, Any]]:
        history = state.channels.get((line, channel), [])
        current = history[-1] if history else None
        earlier = [v for v in history if v != current]
        if current is None:
            known = sorted(c for (name, c) in state.channels if name == line)
            shown = ", ".join(known) or "none"
            raise NotFound(f"{store.uri}: line '{line}' has no channel '{channel}' (channels: {shown})")
        if not earlier:
            raise Conflict(f"{store.uri}: {line}'s channel '{channel}' has held only v{current}: nothing to go back to")
        fields = {"line": line, "channel": channel, "from_version": current, "to_version": earlier[-1], "note": note}
        if state.policy is None or channel not in state.policy.channels:
            return "rolled_back", fields | ({"by": signer.who} if signer else {})
        if signer is None:
            raise TrustError(f"{channel} is protected: a rollback must be signed by an approver (--key)")
        return "rolled_back", _signed(state, "rolled_back", signer, fields, None)

    ledger.append(build)
    version = ledger.state.channel(line, channel)
    assert version is not None
    return ledger.state.releases[(line, version)]


def settled(state: State, line: str, version: int, channel: str) -> str | None:
    """Why a release awaits no decision any more (on the approval channel, or rejected), or None."""
    if version in state.channels.get((line, channel), []):
        return f"v{version} is on {channel}"
    rejected = [who for who, word in state.words(line, version).items() if word == "rejected"]
    return f"v{version} was rejected by {', '.join(rejected)}" if rejected else None
