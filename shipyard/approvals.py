"""Approvals: a person approves or rejects a release; enough distinct approvals promote it.

Every door (Prefect UI form, CLI, dashboard) ends here, in one ledger event
with identity, note, door and time. Approvers come from `approval.approvers`;
the pipeline's own identity can never approve; `approval.required` distinct
approvers promote the release to `approval.channel` (one more event). A
rejection needs a note. Called by the CLI, the approval flow and the dashboard.
"""

from __future__ import annotations

from typing import Any

from shipyard import publish
from shipyard.errors import ConfigError
from shipyard.ledger import Event, Ledger, State
from shipyard.settings import ApprovalSettings
from shipyard.stores import Store


def _check(state: State, line: str, version: int, who: str, rules: ApprovalSettings) -> None:
    if who == rules.pipeline_identity:
        raise ConfigError(f"'{who}' is the pipeline's own identity and cannot approve or reject")
    if who not in rules.approvers:
        allowed = ", ".join(rules.approvers) or "none configured (approval.approvers)"
        raise ConfigError(f"'{who}' is not an approver; approvers: {allowed}")
    if (line, version) not in state.releases:
        raise ConfigError(f"line '{line}' has no version {version} (latest {state.latest(line)})")


def last_words(state: State, line: str, version: int) -> dict[str, str]:
    """Each identity's latest word on the release: approved or rejected."""
    return {entry["by"]: entry["type"] for entry in state.approvals.get((line, version), [])}


def last_word(state: State, line: str, version: int, who: str) -> str | None:
    return last_words(state, line, version).get(who)


def approvers_of(state: State, line: str, version: int) -> list[str]:
    """Distinct identities whose latest word on the release is an approval."""
    return sorted(who for who, kind in last_words(state, line, version).items() if kind == "approved")


def approve(
    store: Store, line: str, version: int, who: str, rules: ApprovalSettings, note: str = "", door: str = "cli"
) -> list[Event]:
    """Record `who`'s approval; promote when enough distinct approvers agree. The events this call appended.

    Idempotent: a second approval by the same person, or one after the promotion, appends nothing.
    """
    ledger = Ledger(store)

    def approval(state: State) -> tuple[str, dict[str, Any]] | None:
        _check(state, line, version, who, rules)
        if who in approvers_of(state, line, version):
            return None
        return "approved", {"line": line, "version": version, "by": who, "note": note, "door": door}

    approved = ledger.append(approval)

    def promotion(state: State) -> tuple[str, dict[str, Any]] | None:
        enough = len(approvers_of(state, line, version)) >= rules.required
        if not enough or state.channel(line, rules.channel) == version:
            return None
        by = approvers_of(state, line, version)
        return "promoted", {"line": line, "channel": rules.channel, "version": version, "approved_by": by}

    return [event for event in (approved, ledger.append(promotion)) if event is not None]


def reject(
    store: Store, line: str, version: int, who: str, note: str, rules: ApprovalSettings, door: str = "cli"
) -> Event | None:
    """Record `who`'s rejection of the release (None if that is their word already); a note saying why is required."""
    if not note.strip():
        raise ConfigError("a rejection needs a note saying why (--note)")

    def rejection(state: State) -> tuple[str, dict[str, Any]] | None:
        _check(state, line, version, who, rules)
        if last_word(state, line, version, who) == "rejected":
            return None
        return "rejected", {"line": line, "version": version, "by": who, "note": note, "door": door}

    return Ledger(store).append(rejection)


def promote_approved(store: Store, line: str, version: int, channel: str, rules: ApprovalSettings) -> int:
    """Point `channel` at the release; the approval channel only with enough approvals on record. The version."""
    if channel == rules.channel:
        by = approvers_of(Ledger(store).refresh(), line, version)
        if len(by) < rules.required:
            raise ConfigError(
                f"v{version} has {len(by)} of the {rules.required} approval(s) {channel} needs: "
                f"shipyard approve v{version} --as NAME"
            )
    return publish.promote(store, line, version, channel).version


def settled(state: State, line: str, version: int, channel: str) -> str | None:
    """Why a release awaits no decision any more (on the approval channel, or rejected), or None."""
    if version in state.channels.get((line, channel), []):
        return f"v{version} is on {channel}"
    rejected = [who for who, word in last_words(state, line, version).items() if word == "rejected"]
    return f"v{version} was rejected by {', '.join(rejected)}" if rejected else None
