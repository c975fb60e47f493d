"""The signed approval policy kept in the store, and the rules the ledger's fold applies with it.

The policy says who may approve (each approver's public keys), how many
distinct approvers each protected channel needs, whether one rejection is a
veto, whether an ungated release may reach the channel, and which doors
(dashboard, Prefect form) may attest for which people. It is a `policy`
ledger event signed by the store's owner keys; the first one is the root, and
readers pin its owners' fingerprints (`trust.owners`). A later policy needs
the signatures of `threshold` owners of the policy in force and of its own
(as TUF rotates its root). Decisions (`approved`, `rejected`, `rolled_back`)
are statements signed by the person, or by a door that authenticated them:
the store (its root policy event's digest), the line, the version and its
manifest digest, the channel and the head it leaves (version and the seq of
the event that put it there), who signed the gate verdict, the note and the
time; a signature made for one of them means nothing for any other. The
pipeline's own keys (`gate`) sign gate verdicts (`gate_statement`). The fold
(`shipyard.registry.ledger.apply`) asks `policy_problem` and `decision_problem`
whether an event counts, and `shipyard.registry.moves` whether the signatures
move a channel; an event that does not count is ignored by every reader and
reported by `shipyard ledger verify`. Nothing here reads the caller's
settings: a caller can only narrow what the store allows.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shipyard.digests import digest_json
from shipyard.errors import ConfigError, TrustError
from shipyard.registry import signing
from shipyard.registry.attest import parse_release_key

DECISIONS = ("approved", "rejected", "rolled_back")


class ChannelRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    required: int = Field(1, ge=1, description="Distinct approvers whose latest word is an approval.")
    allow_ungated: bool = Field(False, description="Whether a release published with --ungated may reach it.")


class DoorRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(description="The public key the door signs its attestations with.")
    attests: list[str] = Field(description="The approvers this door may attest for (after it authenticated them).")
    several: bool = Field(
        False, description="Whether its attestations for different people may together meet a channel's `required`."
    )


class ApprovalPolicy(BaseModel):
    """Who may move the protected channels of a store; signed by its owners."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(1, ge=1, description="Grows by one with every new policy.")
    owners: list[str] = Field(min_length=1, description="Public keys of the store's owners.")
    threshold: int = Field(1, ge=1, description="Owner signatures a new policy needs.")
    approvers: dict[str, list[str]] = Field(description="Approver → their public keys (empty: doors only).")
    channels: dict[str, ChannelRule] = Field(default_factory=lambda: {"stable": ChannelRule()})
    veto: bool = Field(True, description="One standing rejection keeps a release off every protected channel.")
    doors: dict[str, DoorRule] = Field(default_factory=dict, description="Door name → its key and whom it attests.")
    gate: list[str] = Field(
        default_factory=list, description="Public keys the pipeline signs gate verdicts with; none: nothing is gated."
    )
    release_keys: list[str] = Field(
        default_factory=list,
        description="PEM public keys (EC, NIST curves) releases are signed with: Model Signing bundle, provenance.",
    )
    signature_days: float | None = Field(
        None, gt=0, description="Days a signed decision counts towards a move after it was signed; None: no expiry."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ApprovalPolicy:
        people = {signing.fingerprint(k) for keys in self.approvers.values() for k in keys}
        for line in [*self.owners, *self.gate]:
            signing.parse_public(line)
        for pem in self.release_keys:
            parse_release_key(pem)
        for name, door in self.doors.items():
            if signing.fingerprint(door.key) in people:
                raise ValueError(f"door '{name}' signs with an approver's key; a door key must be a key of its own")
            strangers = sorted(set(door.attests) - set(self.approvers))
            if strangers:
                raise ValueError(f"door '{name}' attests for {strangers}, who are not approvers")
        if people & {signing.fingerprint(k) for k in self.gate}:
            raise ValueError("a gate key is also an approver's key; the pipeline must sign with a key of its own")
        if self.threshold > len(self.owners):
            raise ValueError(f"threshold {self.threshold} > {len(self.owners)} owner key(s)")
        for channel, rule in self.channels.items():
            if rule.required > len(self.approvers):
                raise ValueError(f"channel '{channel}' needs {rule.required} approvers; {len(self.approvers)} listed")
        return self

    def owner_fingerprints(self) -> list[str]:
        return sorted(signing.fingerprint(k) for k in self.owners)

    def approver_with(self, fingerprint: str) -> str | None:
        """The approver whose key this is, if any."""
        return next(
            (who for who, keys in self.approvers.items() if fingerprint in {signing.fingerprint(k) for k in keys}),
            None,
        )


def load_approval_policy(path: Path, **fields: Any) -> ApprovalPolicy:
    """A policy from a YAML file (`fields` fill what it leaves out, such as owners).

    A key may be written as its OpenSSH line or as the path of a `.pub` file, relative to the YAML file.
    """
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the policy ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping (approvers, channels, veto, doors)")
    data = fields | data
    try:
        data["owners"] = [_key(path, k) for k in data.get("owners", [])]
        data["approvers"] = {
            who: [_key(path, k) for k in keys or []] for who, keys in data.get("approvers", {}).items()
        }
        data["doors"] = {name: door | {"key": _key(path, door["key"])} for name, door in data.get("doors", {}).items()}
        data["gate"] = [_key(path, k) for k in data.get("gate", [])]
        data["release_keys"] = [_pem(path, k) for k in data.get("release_keys", [])]
        return ApprovalPolicy(**data)
    except (ValidationError, ConfigError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"{path}: invalid policy: {exc}") from None


def _key(policy_file: Path, entry: str) -> str:
    if entry.startswith(signing.KEY_TYPE):
        return entry
    try:
        line = (policy_file.parent / entry).read_text(errors="replace").strip()
    except OSError as exc:
        raise ConfigError(f"{policy_file}: key file {entry}: {exc.strerror}") from None
    try:
        signing.parse_public(line)
    except ConfigError:  # never echo the file: it may be a private key given by mistake
        raise ConfigError(
            f"{policy_file}: key file {entry}: not an OpenSSH public key line ('ssh-ed25519 AAAA… [comment]')"
        ) from None
    return line


def _pem(policy_file: Path, entry: str) -> str:
    """A release key written inline (PEM) or as the path of its .pub file, relative to the policy file."""
    if entry.lstrip().startswith("-----BEGIN"):
        return entry
    try:
        return (policy_file.parent / entry).read_text()
    except OSError as exc:
        raise ConfigError(f"{policy_file}: release key file {entry}: {exc.strerror}") from None


def signed_policy(policy: ApprovalPolicy, keys: list[Ed25519PrivateKey], prev: str) -> dict[str, Any]:
    """The data of a `policy` event: the policy and the owners' signatures, bound to the event before it."""
    body = policy.model_dump(mode="json")
    return {"policy": body, "signatures": [signing.sign(k, "policy", {"policy": body, "prev": prev}) for k in keys]}


def policy_problem(
    current: ApprovalPolicy | None, data: dict[str, Any], prev: str
) -> tuple[ApprovalPolicy | None, str]:
    """The policy an event sets, or why it does not count."""
    try:
        new = ApprovalPolicy(**data.get("policy", {}))
    except (ValidationError, ConfigError, TypeError) as exc:
        return None, f"not a valid policy ({str(exc).splitlines()[0]})"
    payload = {"policy": data.get("policy"), "prev": prev}
    signers = {signing.fingerprint(s["key"]) for s in data.get("signatures", []) if signing.valid(s, "policy", payload)}
    if len(signers & set(new.owner_fingerprints())) < new.threshold:
        return None, f"needs {new.threshold} signature(s) of its own owners"
    if current is not None:
        if len(signers & set(current.owner_fingerprints())) < current.threshold:
            return None, f"needs {current.threshold} signature(s) of the owners of policy v{current.version}"
        if new.version <= current.version:
            return None, f"version {new.version} does not follow policy v{current.version}"
    return new, ""


def decision(
    key: Ed25519PrivateKey, kind: str, who: str, door: str, fields: dict[str, Any], now: float | None = None
) -> dict[str, Any]:
    """The data of a signed decision event: `fields` (store, line, version, manifest, channel…) plus who, door, time."""
    data = fields | {"by": who, "door": door, "signed_at": now if now is not None else time.time()}
    return data | {"signature": signing.sign(key, kind, data)}


def decision_problem(policy: ApprovalPolicy, kind: str, data: dict[str, Any], manifest: str | None, store: str) -> str:
    """Why a decision event does not count under `policy` in the store whose root event is `store` ("" if it does)."""
    who, door, signature = data.get("by"), data.get("door"), data.get("signature")
    unsigned = {k: v for k, v in data.items() if k != "signature"}
    if not isinstance(signature, dict) or not signing.valid(signature, kind, unsigned):
        return "not signed, or the signature does not match"
    if data.get("store") != store:
        return "signed for another store (its root policy differs)"
    if data.get("manifest") != manifest:
        return "signed for another manifest than the release's"
    if kind != "rejected" and not isinstance(data.get("channel"), str):
        return "names no channel"
    if not isinstance(data.get("signed_at"), int | float):
        return "carries no signing time"
    if who not in policy.approvers:
        return f"'{who}' is not an approver in policy v{policy.version}"
    signer = signing.fingerprint(signature["key"])
    if vouches(policy, str(who), str(door), signer):
        return ""
    rule = policy.doors.get(str(door))
    if rule is not None and signer == signing.fingerprint(rule.key):
        return f"door '{door}' may not attest for '{who}'"
    return f"signed by {signer}, which policy v{policy.version} gives neither to '{who}' nor to door '{door}'"


def vouches(policy: ApprovalPolicy, who: str, door: str, signer: str) -> bool:
    """Whether the key with fingerprint `signer` speaks for `who` under `policy`: theirs, or a door's that may attest
    for them. A move re-asks it of every signature it counts, so a key a newer policy dropped counts no more."""
    if policy.approver_with(signer) == who:
        return True
    rule = policy.doors.get(door)
    return rule is not None and signer == signing.fingerprint(rule.key) and who in rule.attests


def gate_statement(gate: dict[str, Any], checkpoint_digest: str) -> dict[str, Any]:
    """What the pipeline signs of a gate decision: the candidate, the gate policy, the per-item results, the
    checkpoint it was made from, the verdict, and the decision's place in its line's stream (when it has one)."""
    stream = gate.get("stream")
    return {
        "candidate_digest": gate.get("candidate_digest"),
        "policy_digest": gate.get("policy_digest"),
        "items_digest": gate.get("items_digest"),
        "checkpoint_digest": checkpoint_digest,
        "verdict": "pass" if gate.get("passed") is True else "fail",
        **({"stream": digest_json(stream)} if isinstance(stream, dict) else {}),
    }


def sign_gate(gate: dict[str, Any], key: Ed25519PrivateKey, checkpoint_digest: str) -> dict[str, Any]:
    """The gate decision with its statement signed by the pipeline's key."""
    statement = gate_statement(gate, checkpoint_digest)
    return gate | {"statement": statement, "signature": signing.sign(key, "gate", statement)}


def gate_signer(policy: ApprovalPolicy | None, gate: Any, candidate_digest: str) -> tuple[str | None, str]:
    """The fingerprint of the gate key of `policy` that signed a passing verdict on this candidate, or why none did."""
    if not isinstance(gate, dict):
        return None, "no gate decision"
    statement, signature = gate.get("statement"), gate.get("signature")
    if not isinstance(statement, dict) or not signing.valid(signature, "gate", statement):
        return None, "the gate decision is not signed"
    expected = gate_statement(gate, str(statement.get("checkpoint_digest")))
    if "stream" not in statement:  # signed before statements named the stream: the verdict holds, its stream
        expected.pop("stream", None)  # record is not counted (`stream_records`)
    if statement.get("candidate_digest") != candidate_digest or statement != expected:
        return None, "the signed gate statement is about another candidate or decision"
    if statement.get("verdict") != "pass":
        return None, "the signed gate verdict is a fail"
    signer = signing.fingerprint(str(signature["key"]))  # type: ignore[index]  # valid() checked it is a dict
    if policy is None or signer not in {signing.fingerprint(k) for k in policy.gate}:
        return None, f"signed by {signer}, which the store's policy does not name as a gate key"
    return signer, ""


def stream_of_verdict(gate: dict[str, Any]) -> dict[str, Any]:
    """What a ledger event carries of a gate decision's place in its stream: the record, and the signed verdict
    (statement and signature) that names it, when the pipeline signed one."""
    if not isinstance(gate.get("stream"), dict):
        return {}
    signed = {k: gate[k] for k in ("statement", "signature") if k in gate}
    return {"stream": gate["stream"], **({"verdict": signed} if len(signed) == 2 else {})}


def stream_records(policy: ApprovalPolicy | None, events: list[dict[str, Any]], line: str) -> list[dict[str, Any]]:
    """The gate decisions of `line` a reader may count in its stream: the `stream` record of each `released` or
    `gate_failed` event whose verdict (`verdict`: statement and signature) a gate key of the policy signed, the
    statement naming that very record, the record naming the line. A policy naming no gate key (an open store)
    signs nothing, so its records count as written."""
    keys = {signing.fingerprint(k) for k in policy.gate} if policy is not None else set()
    counted = []
    for data in events:
        record = data.get("stream")
        if data.get("line") != line or not isinstance(record, dict):
            continue
        if keys:
            verdict = data.get("verdict")
            statement = verdict.get("statement") if isinstance(verdict, dict) else None
            signature = verdict.get("signature") if isinstance(verdict, dict) else None
            if not isinstance(statement, dict) or not signing.valid(signature, "gate", statement):
                continue
            if signing.fingerprint(str(signature["key"])) not in keys:  # type: ignore[index]  # valid() checked it
                continue
            if statement.get("stream") != digest_json(record) or record.get("line") != line:
                continue
        counted.append(record)
    return counted


def check_root(root: list[str], pins: list[str], uri: str, allow_unpinned: bool = False) -> None:
    """Refuse a store whose root policy names an owner the reader did not pin, and a protected store read with no
    pins at all (unless `allow_unpinned`): a reader that pins nothing would believe whoever wrote event 1."""
    if not pins:
        if root and not allow_unpinned:
            raise TrustError(
                f"{uri}: owned by {', '.join(root)}, and this reader pins no owners; check the fingerprints with the"
                f" owners, then run `shipyard trust pin` or add to the settings  trust: {{owners: {json.dumps(root)}}}"
                "  (SHIPYARD_TRUST__ALLOW_UNPINNED=1 reads it unpinned)"
            )
        return
    if not root:
        raise TrustError(f"{uri}: no signed policy in the store, but trust.owners pins {', '.join(pins)}")
    if not set(root) <= set(pins):
        raise TrustError(
            f"{uri}: the store's root policy is owned by {', '.join(root)}, not by the pinned {', '.join(pins)}"
        )
