"""Approval flows: a light run that waits for a person's decision on one release; promotion; rollback.

`await_approval` holds no model and no accelerator. It pauses with a form (a
`RunInput`: approve or reject, approver, note) whose description is the
evidence — gate checks and scores against the champion. Run from a
deployment it suspends (the process exits; resuming reschedules it), otherwise
it pauses in place. The CLI and the dashboard resume the same run with the same
input. Each decision goes through `shipyard.approvals` (allowlist, pipeline
identity, N distinct approvers) into one ledger event; a refused decision is
logged and the run waits again. When the wait times out the release stays a
candidate, approvable later by any door.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput

from shipyard import approvals, publish
from shipyard.doors import record_decision
from shipyard.errors import ConfigError
from shipyard.evidence import evidence
from shipyard.ledger import Ledger
from shipyard.notify import announce_latest
from shipyard.pipeline import release_store
from shipyard.settings import Settings, load_settings


class ApprovalDecision(RunInput):
    """The form a waiting approval run shows."""

    decision: Literal["approve", "reject"]
    approver: str
    note: str = ""
    door: str = "prefect-ui"


def _settings(config: str | None) -> Settings:
    return load_settings(Path(config) if config else None)


def _wait(description: str, timeout: int, poll: int, key: str) -> ApprovalDecision:
    form = ApprovalDecision.with_initial_data(description=description, decision="approve")
    context = FlowRunContext.get()
    if context and context.flow_run and context.flow_run.deployment_id:
        decision = suspend_flow_run(wait_for_input=form, timeout=timeout, key=key)
    else:
        decision = pause_flow_run(wait_for_input=form, timeout=timeout, poll_interval=poll, key=key)
    assert decision is not None
    return decision


@flow(name="await-approval", log_prints=True)
def await_approval(line: str, version: int, config: str | None = None) -> str:
    """Wait for approvals of one release until it is promoted, rejected, or the wait times out."""
    settings = _settings(config)
    store, rules, logger = release_store(settings), settings.approval, get_run_logger()
    description = evidence(store, line, version, settings.pipeline.champion_channel)
    for attempt in range(100):
        done = approvals.settled(Ledger(store).refresh(), line, version, rules.channel)
        if done:
            return done
        try:
            decision = _wait(description, rules.wait_seconds, rules.poll_seconds, key=f"decision-{attempt}")
        except FlowPauseTimeout:
            return f"no decision within {rules.wait_seconds} s; v{version} stays a candidate, approvable later"
        try:
            record_decision(
                settings, store, line, version, decision.decision, decision.approver, decision.note, decision.door
            )
        except ConfigError as exc:
            logger.warning("decision refused: %s", exc)
    return f"v{version}: too many refused decisions; approve it from the CLI or the dashboard"


@flow(name="promote-release")
def promote_release(line: str, version: int, channel: str | None = None, config: str | None = None) -> int:
    """Point a channel at a release. The approval channel (stable) moves only with enough approvals on record."""
    settings = _settings(config)
    store = release_store(settings)
    approvals.promote_approved(store, line, version, channel or settings.approval.channel, settings.approval)
    announce_latest(settings.notify, store)
    return version


@flow(name="rollback-release")
def rollback_release(
    line: str, channel: str = "stable", by: str = "", note: str = "", config: str | None = None
) -> int:
    """Put the channel back on the release it had before; one ledger event, no copy. The version now on it."""
    settings = _settings(config)
    store = release_store(settings)
    release = publish.rollback(store, line, channel, by=by, note=note)
    announce_latest(settings.notify, store)
    return release.version
