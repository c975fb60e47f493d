"""What a reader trusts, from its own settings: the pinned root, its signing keys, and anchors outside the store.

- `checked_state` and `check_anchors` refuse a store whose root policy is not
  owned by the keys pinned in `trust.owners`, or whose log no longer holds an
  anchor: every reader goes through them.
- `cli_signer` and `door_signer` load the key a person or a door signs with.
- Anchors: `SEQ:DIGEST` of a ledger event, kept outside the store (printed by
  `shipyard ledger head`, carried by every webhook receipt, remembered by each
  reader in `<home>/anchors/`). A log that no longer holds that event has been
  cut or rewritten, whatever its chain says.
- `sign_gate_report` signs a gate decision with the pipeline's key (`trust.gate_key`).
- `set_policy` writes a new signed policy (the first one turns an existing
  store into a protected one; its history stays readable).

Called by the CLI, the doors and the approval flow.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from shipyard.caches import write_whole
from shipyard.errors import ConfigError, LedgerError, TrustError
from shipyard.registry import signing
from shipyard.registry.approval_policy import ApprovalPolicy, check_root, policy_problem, sign_gate, signed_policy
from shipyard.registry.approvals import Signer, person
from shipyard.registry.ledger import Event, Ledger, event_key
from shipyard.registry.state import State
from shipyard.registry.stores import Store
from shipyard.settings import Settings


def checked_state(store: Store, settings: Settings) -> State:
    """The ledger's state, refused unless the reader's anchors hold (`check_anchors`)."""
    state = Ledger(store).refresh()
    check_anchors(store, settings, state)
    return state


def check_anchors(store: Store, settings: Settings, state: State, events: list[Event] | None = None) -> None:
    """Refuse a log whose root is not the pinned one, that no longer holds the pinned `trust.anchor`, or that no
    longer holds the head this reader saw last (kept under `<home>/anchors/`); then remember its head. Every
    reader calls it: the CLI, the doors, the dashboard and the flows. A long-lived reader passes the `events` it
    folded: the anchors are checked against what it shows, with no read of the store."""
    check_root(state.root, settings.trust.owners, store.uri, settings.trust.allow_unpinned)
    if settings.trust.anchor and (problems := anchor_problems(store, settings.trust.anchor, events)):
        raise LedgerError(f"{problems[0]}; refusing to read it (the anchor is trust.anchor)")
    if problems := check_remembered(settings.home, store, state, events):
        raise LedgerError(
            f"{problems[0]}; refusing to read it (this reader saw that event before; if the store was replaced on"
            f" purpose, delete {remembered(settings.home, store)})"
        )


def cli_signer(settings: Settings, state: State, key: Path | None, claimed: str | None) -> Signer:
    path = key or settings.trust.key
    if path is None:
        raise ConfigError("no signing key: pass --key PATH or set trust.key (make one with `shipyard keygen`)")
    return person(state.policy, signing.load_private(path.expanduser()), claimed)


def door_signer(settings: Settings, door: str, who: str) -> Signer:
    """The door's attestation that it authenticated `who`."""
    path = settings.trust.door_keys.get(door)
    if path is None:
        raise ConfigError(f"door '{door}' has no key (trust.door_keys.{door}); it cannot attest decisions")
    return Signer(who, signing.load_private(path.expanduser()), door)


def sign_gate_report(gate_json: Path, settings: Settings, checkpoint_digest: str) -> bool:
    """Sign the gate decision in `gate_json` with the pipeline's key, in place; False if no key is configured."""
    if settings.trust.gate_key is None:
        return False
    key = signing.load_private(settings.trust.gate_key.expanduser())
    gate = json.loads(gate_json.read_text())
    gate_json.write_text(json.dumps(sign_gate(gate, key, checkpoint_digest), indent=1) + "\n")
    return True


def set_policy(store: Store, policy: ApprovalPolicy, keys: list[Path]) -> Event:
    """Write `policy` signed by the owner keys at `keys`; its version follows the one in force. A policy readers
    would not take (too few owner signatures) is refused here, before anything is written."""
    owners = [signing.load_private(k.expanduser()) for k in keys]
    ledger = Ledger(store)

    def build(state: State) -> tuple[str, dict[str, object]]:
        version = state.policy.version + 1 if state.policy else policy.version
        data = signed_policy(policy.model_copy(update={"version": version}), owners, state.head)
        if (why := policy_problem(state.policy, data, state.head)[1]) != "":
            raise TrustError(f"{store.uri}: policy v{version} not written: {why}")
        return "policy", data

    event = ledger.append(build)
    assert event is not None
    return event


def head(state: State) -> str:
    return f"{state.events}:{state.head}"


def anchor_problems(store: Store, anchor: str, events: list[Event] | None = None) -> list[str]:
    """Why the log (or the `events` a reader folded from it) no longer holds the event `anchor` (SEQ:DIGEST)
    names; empty if it does."""
    seq_text, _, digest = anchor.partition(":")
    if not seq_text.isdigit() or len(digest) != 64:
        raise ConfigError(f"anchor {anchor!r}: expected SEQ:DIGEST as `shipyard ledger head` prints it")
    seq = int(seq_text)
    found: str | None
    if events is not None and 0 < seq <= len(events):
        found = events[seq - 1].digest
    else:
        body = store.get(event_key(seq))
        found = hashlib.sha256(body).hexdigest() if body is not None else None
    if found is None:
        return [f"{store.uri}/{event_key(seq)}: the anchored event {seq} is gone (the log was cut)"]
    if found != digest:
        return [f"{store.uri}/{event_key(seq)}: differs from the anchored event {seq} (the log was rewritten)"]
    return []


def remembered(home: Path, store: Store) -> Path:
    return home / "anchors" / f"{hashlib.sha256(store.uri.encode()).hexdigest()[:24]}.json"


def check_remembered(
    home: Path, store: Store, state: State | None = None, events: list[Event] | None = None
) -> list[str]:
    """Compare the log with the head this reader saw last time; remember the new head when sound."""
    path = remembered(home, store)
    problems = []
    if path.is_file():
        try:
            problems = anchor_problems(store, json.loads(path.read_text())["anchor"], events)
        except (json.JSONDecodeError, KeyError, TypeError, ConfigError) as exc:
            raise LedgerError(f"{path}: not an anchor this reader wrote ({exc})") from None
    if not problems:
        try:
            state = state or Ledger(store).refresh()
        except LedgerError:
            return problems
        if state.events:
            write_whole(path, json.dumps({"store": store.uri, "anchor": head(state)}) + "\n")
    return problems
