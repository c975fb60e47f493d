"""Shipyard's conversations with the Prefect API: the training slot, release runs, waiting approval runs.

- The training/eval slot is a global concurrency limit (`pipeline.slot`,
  `pipeline.slot_limit`), created when missing and taken strictly, so two
  flows never post-train or evaluate on the same machine at once.
- With a release deployment configured (`pipeline.release_deployment`, set
  by `shipyard serve`), the watch flow starts one release run per checkpoint
  through it, with an idempotency key from the checkpoint digest, and
  cancels runs that have not started when a newer checkpoint supersedes them.
- With stage deployments configured (`pipeline.posttrain_deployment`,
  `pipeline.eval_deployment`), the release run starts post-training and
  evaluation as runs of their own on their own pools and waits for them.
- Approval runs wait paused with tags naming the release; any door resumes
  the one waiting for a release through `resume_approval`.

Called by the flows and the CLI; nothing here decides what to release.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.flow_runs import resume_flow_run
from prefect.settings import PREFECT_API_URL
from prefect.states import AwaitingRetry

from shipyard.checkpoints import Checkpoint
from shipyard.errors import ConfigError, OrchestrationError
from shipyard.orchestration.crossing import read_stage_result
from shipyard.settings import PipelineSettings

APPROVAL_FLOW = "await-approval"
RELEASE_FLOW = "release-checkpoint"
CRASH_DETECTION = "shipyard-crash-detection"
SHIPYARD_FLOWS = (  # the flows crash detection watches: only Shipyard's, on a server others share
    "watch-run",
    RELEASE_FLOW,
    "posttrain-checkpoint",
    "evaluate-checkpoint",
    APPROVAL_FLOW,
    "promote-release",
    "rollback-release",
)
WAITING = [StateType.SCHEDULED, StateType.PENDING]


def ensure_slot(pipeline: PipelineSettings) -> None:
    """Create the global concurrency limit of the training/eval slot if it does not exist."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(pipeline.slot)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # another flow created it first
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=pipeline.slot, limit=pipeline.slot_limit)
                )


def training_slot(pipeline: PipelineSettings, held: bool = True) -> AbstractContextManager[None]:
    """Hold the slot while post-training or evaluating (nothing when not `held`); strict: a missing limit is an
    error, not a free pass."""
    return _hold(pipeline.slot) if held else nullcontext()


@contextmanager
def _hold(slot: str) -> Iterator[None]:
    with concurrency(slot, occupy=1, strict=True):
        yield


def split(pipeline: PipelineSettings) -> bool:
    """Whether a heavy stage runs as a run of its own deployment. Then each stage run takes the slot itself and
    the release run holds none; otherwise the release run holds it from screening to the gate's verdict."""
    return bool(pipeline.posttrain_deployment or pipeline.eval_deployment)


def release_tags(line: str, checkpoint: Checkpoint) -> list[str]:
    return ["shipyard", f"line:{line}", f"step:{checkpoint.step}", f"checkpoint:{checkpoint.digest[:16]}"]


def approval_tags(line: str, version: int) -> list[str]:
    return ["shipyard", f"line:{line}", f"release:{line}:v{version}"]


def idempotency_key(line: str, checkpoint: Checkpoint) -> str:
    """One release run per checkpoint content and line, however often it is offered."""
    return f"shipyard-release:{line}:{checkpoint.digest}"


def start_release_run(
    deployment: str, line: str, checkpoint: Checkpoint, config: str | None, of_run: str | None = None
) -> FlowRun:
    """Start (or find, by idempotency key) the release run of `checkpoint` through `deployment`; do not wait."""
    from prefect.deployments import run_deployment

    run = run_deployment(
        deployment,
        parameters={"checkpoint": checkpoint.as_dict(), "config": config, "run": of_run},
        flow_run_name=f"step-{checkpoint.step}",
        tags=release_tags(line, checkpoint),
        idempotency_key=idempotency_key(line, checkpoint),
        timeout=0,
        as_subflow=False,
    )
    assert isinstance(run, FlowRun)
    return run


def run_stage(deployment: str, name: str, parameters: dict[str, Any], home: Path) -> Any:
    """Run a heavy stage as a run of `deployment` (on its own pool) and wait for it; the stage's result.

    The idempotency key is the calling flow run and a digest of the parameters: a release run that crashed while
    it waited finds the same stage run again (running or finished) instead of starting a second one. The stage
    run reads its own settings; it gets the run's name and paths inside the shared home (`home`, as this pool
    mounts it, goes along so the stage rebases them onto its own mount). Its result is small (a path in the
    shared home, a verdict) and comes back through that home (`shipyard.orchestration.crossing`); models and
    scores stay there, by digest.
    """
    from prefect.context import FlowRunContext
    from prefect.deployments import run_deployment

    context = FlowRunContext.get()
    caller = context.flow_run.id if context and context.flow_run else ""
    digest = hashlib.sha256(json.dumps(parameters, sort_keys=True, default=str).encode()).hexdigest()[:32]
    key = f"shipyard-stage:{caller}:{digest}"
    parameters = {**parameters, "home": str(home)}
    run = run_deployment(deployment, parameters=parameters, flow_run_name=name, idempotency_key=key, timeout=None)
    assert isinstance(run, FlowRun) and run.state is not None
    if not run.state.is_completed():
        raise OrchestrationError(f"{deployment} run {run.name} ended {run.state.name}: {run.state.message or ''}")
    return read_stage_result(home, str(run.id), f"{deployment} run {run.name}")


def release_run(line: str, checkpoint: Checkpoint) -> FlowRun | None:
    """The newest release run of `checkpoint`, or None if there is none."""
    runs = _runs(RELEASE_FLOW, [f"line:{line}", f"checkpoint:{checkpoint.digest[:16]}"])
    return runs[0] if runs else None


def retry(run: FlowRun, why: str) -> None:
    """Schedule a crashed run again now: a worker takes it, its finished stages come from their caches."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, AwaitingRetry(message=why), force=True)


def ensure_crash_detection(pipeline: PipelineSettings) -> None:
    """An automation that marks a Shipyard flow run Crashed when its heartbeats stop for
    `pipeline.crashed_after_seconds` (its worker or machine died); the watch flow then schedules the run again.
    Flow runs send heartbeats when PREFECT_FLOWS_HEARTBEAT_FREQUENCY is set in their environment (infra/prefect.yaml
    sets it)."""
    from prefect.automations import AutomationCore, ChangeFlowRunState, EventTrigger, Posture

    with get_client(sync_client=True) as client:
        if client.read_automations_by_name(CRASH_DETECTION):
            return
    ended = [f"prefect.flow-run.{name}" for name in ("Completed", "Failed", "Cancelled", "Crashed", "Paused")]
    automation = AutomationCore(
        name=CRASH_DETECTION,
        description="Mark a Shipyard flow run Crashed when its heartbeats stop (Shipyard retries release runs).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Suspended", *ended},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": list(SHIPYARD_FLOWS)},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=pipeline.crashed_after_seconds),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message="its heartbeats stopped")],
    )
    with get_client(sync_client=True) as client:
        client.create_automation(automation)


def api_configured() -> bool:
    """True when a Prefect server is configured (PREFECT_API_URL); doors only look for waiting runs then."""
    return bool(PREFECT_API_URL.value())


def waiting_approval(line: str, version: int) -> FlowRun | None:
    """The approval run paused for this release, if any."""
    runs = _runs(APPROVAL_FLOW, [f"release:{line}:v{version}"], [StateType.PAUSED])
    return runs[0] if runs else None


def resume_approval(line: str, version: int, decision: dict[str, Any]) -> FlowRun | None:
    """Hand `decision` to the approval run waiting for this release; the run resumed, or None if none waits."""
    if not api_configured():
        return None
    run = waiting_approval(line, version)
    if run is None:
        return None
    try:
        resume_flow_run(run.id, run_input=decision)
    except RuntimeError as exc:  # the server rejected the input (it does not match the form)
        raise ConfigError(f"approval run {run.name} refused the decision: {exc}") from None
    return run


def _runs(flow: str, tags: list[str], states: list[StateType] | None = None) -> list[FlowRun]:
    """Runs of `flow` carrying all `tags` (in the given states), newest first."""
    flow_runs = FlowRunFilter(tags=FlowRunFilterTags(all_=tags))
    if states:
        flow_runs.state = FlowRunFilterState(type=FlowRunFilterStateType(any_=states))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])), flow_run_filter=flow_runs
        )
    return sorted(runs, key=lambda run: run.created or 0, reverse=True)


def _step(run: FlowRun) -> int:
    return next((int(tag.split(":", 1)[1]) for tag in run.tags if tag.startswith("step:")), 0)
