"""Approval flows: a light run that waits for a person's decision on one release; promotion; rollback.

`await_approval` holds no model and no accelerator. It pauses with a form (a
`RunInput`: approve or reject, approver, their door token, note) whose
description is the evidence — gate verdict and checks, scores against the
champion. Run from a deployment it suspends (the process exits; resuming
reschedules it), otherwise it pauses in place. Whoever resumes it, the run
trusts nothing the form says about who decided: the token must hash to the
approver's entry in this process's `dashboard.tokens`, and the decision is
then signed with the `prefect-ui` door's key, which the store's policy must
list for that approver (`shipyard.registry.doors`). A resume without a token (the CLI
and the dashboard send one after recording their own decision) only makes the
run re-read the ledger. A refused decision is logged and the run waits again.
When `approval.wait_seconds` pass without a decision, the release stays a
candidate, approvable later by any door: a paused run returns saying so; a
suspended one has no process left to say it, so the Prefect server (its
pause-expiration service) fails it: "The flow was paused and never resumed".
When the release is settled, and `hub.mirror_repo` is set, the Hub's channel
branches follow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput

from shipyard.errors import ShipyardError, TrustError
from shipyard.events import Decision
from shipyard.registry import approvals
from shipyard.registry.doors import record_decision, token_matches
from shipyard.registry.evidence import evidence
from shipyard.registry.mirror import mirror_configured
from shipyard.registry.releases import Registry
from shipyard.registry.stores import release_store
from shipyard.registry.trust import checked_state, door_signer
from shipyard.settings import Settings, load_settings

DOOR = "prefect-ui"


class ApprovalDecision(RunInput):
    """The form a waiting approval run shows."""

    decision: Literal["approve", "reject"]
    approver: str
    token: str = ""  # the approver's door token; Prefect keeps run input, so use the dashboard where that matters
    note: str = ""


def _settings(config: str | None) -> Settings:
    return load_settings(Path(config) if config else None)


def _say_if_open(registry: Registry) -> None:
    if notice := registry.open_store():
        get_run_logger().warning(notice)


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
        done = approvals.settled(checked_state(store, settings), line, version, rules.channel)
        if done:
            mirror_configured(settings, store, line, logger)  # the Hub's channel branch follows
            return done
        try:
            decision = _wait(description, rules.wait_seconds, rules.poll_seconds, key=f"decision-{attempt}")
        except FlowPauseTimeout:
            return f"no decision within {rules.wait_seconds} s; v{version} stays a candidate, approvable later"
        token = decision.token
        if not token:
            continue  # woken by another door after it recorded its decision: read the ledger again
        if not token_matches(settings, decision.approver, token):
            logger.warning("decision refused: no valid token for %r", decision.approver)
            continue
        try:
            signer = door_signer(settings, DOOR, decision.approver)
            record_decision(settings, store, line, version, Decision(decision.decision), signer, decision.note)
        except ShipyardError as exc:
            logger.warning("decision refused: %s", exc)
    return f"v{version}: too many refused decisions; approve it from the CLI or the dashboard"


@flow(name="promote-release")
def promote_release(line: str, version: int, channel: str | None = None, config: str | None = None) -> int:
    """Point an unprotected channel at a release; a protected one (stable) moves only by signed approvals."""
    settings = _settings(config)
    registry = Registry.open(settings, line=line)
    registry.promote(str(version), channel or settings.approval.channel)
    _say_if_open(registry)
    mirror_configured(settings, registry.store, line, get_run_logger())
    return version


@flow(name="rollback-release")
def rollback_release(
    line: str, channel: str = "stable", note: str = "", approver: str = "", token: str = "", config: str | None = None
) -> int:
    """Put a channel back on the release it had before: one ledger event, no copy. The version now on it.

    A protected channel (stable) moves back only by a signed rollback, as by an approval: give the approver's name
    and their door token; the run checks the token against `dashboard.tokens` and signs with the `prefect-ui`
    door's key, which the store's policy must list for that approver. The policy's `required` signatures apply
    (the CLI, `shipyard rollback --key`, adds the others). Prefect keeps run parameters: where that matters, roll
    back from the CLI."""
    settings = _settings(config)
    registry = Registry.open(settings, line=line)
    signer = None
    if approver or token:
        if not token_matches(settings, approver, token):
            raise TrustError(f"rollback refused: no valid door token for {approver!r} (dashboard.tokens)")
        signer = door_signer(settings, DOOR, approver)
    registry.rollback(channel, signer, note)
    _say_if_open(registry)
    mirror_configured(settings, registry.store, line, get_run_logger())
    return registry.resolve(channel).version
