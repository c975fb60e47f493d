"""Approvals: a person approves or rejects a release; enough distinct approvals promote it.

Every door (Prefect UI form, CLI, dashboard) ends here, in one ledger event
with identity, note, door and time. Approvers come from `approval.approvers`;
the pipeline's own identity can never approve; `approval.required` distinct
approvers promote the release to `approval.channel` (one more event). A
rejection needs a note. Called by the CLI, the approval flow and the dashboard.
"""

from __future__ import annotations

from typing import Any

from shipyard.errors import ConfigError
from shipyard.ledger import Ledger, State
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


def approvers_of(state: State, line: str, version: int) -> list[str]:
    """Distinct identities whose latest word on the release is an approval."""
    last: dict[str, str] = {}
    for entry in state.approvals.get((line, version), []):
        last[entry["by"]] = entry["type"]
    return sorted(who for who, kind in last.items() if kind == "approved")


def approve(
    store: Store, line: str, version: int, who: str, rules: ApprovalSettings, note: str = "", door: str = "cli"
) -> bool:
    """Record `who`'s approval; promote when enough distinct approvers agree. True if the release was promoted."""
    ledger = Ledger(store)

    def approval(state: State) -> tuple[str, dict[str, Any]] | None:
        _check(state, line, version, who, rules)
        if who in approvers_of(state, line, version):
            return None
        return "approved", {"line": line, "version": version, "by": who, "note": note, "door": door}

    ledger.append(approval)

    def promotion(state: State) -> tuple[str, dict[str, Any]] | None:
        enough = len(approvers_of(state, line, version)) >= rules.required
        if not enough or state.channel(line, rules.channel) == version:
            return None
        by = approvers_of(state, line, version)
        return "promoted", {"line": line, "channel": rules.channel, "version": version, "approved_by": by}

    return ledger.append(promotion) is not None


def reject(
    store: Store, line: str, version: int, who: str, note: str, rules: ApprovalSettings, door: str = "cli"
) -> None:
    """Record `who`'s rejection of the release; a note saying why is required."""
    if not note.strip():
        raise ConfigError("a rejection needs a note saying why (--note)")

    def rejection(state: State) -> tuple[str, dict[str, Any]]:
        _check(state, line, version, who, rules)
        return "rejected", {"line": line, "version": version, "by": who, "note": note, "door": door}

    Ledger(store).append(rejection)
