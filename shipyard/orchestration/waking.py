"""A decision recorded through a door, then handed to the approval run waiting for that release.

The registry records the decision and returns its events; waking a paused Prefect run is orchestration's part.
The run re-reads the ledger and ends: nothing in the hand-over can approve (a resume without a valid token only
wakes the run up). Without a configured Prefect server there is no waiting run, and Prefect is not imported.
"""

from __future__ import annotations

from shipyard.events import Decision
from shipyard.registry.approvals import Signer
from shipyard.registry.doors import record_decision
from shipyard.registry.ledger import Event
from shipyard.registry.stores import Store
from shipyard.settings import Settings, prefect_api_url


def decide_and_wake(
    settings: Settings, store: Store, line: str, version: int, decision: Decision, signer: Signer, note: str = ""
) -> list[Event]:
    """Record the decision, then wake the approval run waiting for this release (it re-reads the ledger)."""
    events = record_decision(settings, store, line, version, decision, signer, note)
    if prefect_api_url():  # no Prefect server, no waiting run: Prefect is not imported (seconds)
        from shipyard.orchestration.prefect import resume_approval

        resume_approval(line, version, {"decision": decision.value, "approver": signer.who, "token": "", "note": note})
    return events
