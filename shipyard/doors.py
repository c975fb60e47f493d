"""The doors a person approves or rejects a release through, outside the Prefect form: the CLI and the dashboard.

Each records the decision in the ledger (`shipyard.approvals`, which enforces
the allowlist and the pipeline identity), sends the notifications, then hands
the same decision to the approval run waiting for that release, if one is
paused on a configured Prefect server, so that run ends too. The run's own
attempt to record the decision again is a no-op: one ledger event per decision.
"""

from __future__ import annotations

from shipyard import approvals
from shipyard.ledger import Event
from shipyard.notify import announce
from shipyard.orchestration import resume_approval
from shipyard.settings import Settings
from shipyard.stores import Store


def record_decision(
    settings: Settings, store: Store, line: str, version: int, decision: str, who: str, note: str, door: str
) -> list[Event]:
    """Record an approval (promoting when enough approvers agree) or a rejection, and notify; the new events.

    The approval run calls this for decisions made in its own form.
    """
    if decision == "approve":
        events = approvals.approve(store, line, version, who, settings.approval, note, door)
    else:
        events = [e for e in [approvals.reject(store, line, version, who, note, settings.approval, door)] if e]
    announce(settings.notify, events)
    return events


def approve_release(
    settings: Settings, store: Store, line: str, version: int, who: str, note: str = "", door: str = "cli"
) -> list[Event]:
    """Approve (promoting when enough approvers agree) and resume the waiting run; the new ledger events."""
    events = record_decision(settings, store, line, version, "approve", who, note, door)
    resume_approval(line, version, {"decision": "approve", "approver": who, "note": note, "door": door})
    return events


def reject_release(
    settings: Settings, store: Store, line: str, version: int, who: str, note: str, door: str = "cli"
) -> list[Event]:
    """Reject (a note is required) and resume the waiting run; the new ledger event."""
    events = record_decision(settings, store, line, version, "reject", who, note, door)
    resume_approval(line, version, {"decision": "reject", "approver": who, "note": note, "door": door})
    return events
