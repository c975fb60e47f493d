"""The watch flow: poll an RL run and take each selected checkpoint through the release flow.

How a selected checkpoint is taken:

- in place (default: ephemeral Prefect, `shipyard watch`, the demo): the
  release flow runs as a subflow; one that fails is the checkpoint's `failed`
  fate, and the poll goes on;
- through `pipeline.release_deployment` (as `shipyard serve` sets it): its own
  release run, started with an idempotency key from the checkpoint digest, so
  offering a checkpoint twice never starts two runs; in-flight checkpoints
  (at most `watch.max_in_flight`) are settled from their run's state on later
  polls: a crashed run is scheduled again up to `pipeline.crash_retries` times;
  one that failed, crashed past its retries or was cancelled is `failed`.

Either way release runs take the training slot strictly. Fates land in the ledger.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import StateType
from shipyard.flows.release_checkpoint import release_checkpoint

from shipyard.checkpoints import Checkpoint, RunState
from shipyard.orchestration import prefect as orchestration
from shipyard.orchestration.pipeline import Outcome, screening_budget
from shipyard.orchestration.watcher import Settle, Take, watch_once
from shipyard.settings import Settings, load_settings

DONE, FAILED = RunState.DONE, RunState.FAILED

ENDED = {StateType.COMPLETED: DONE, StateType.FAILED: FAILED, StateType.CRASHED: FAILED, StateType.CANCELLED: FAILED}


def _in_place(settings: Settings, config: str | None) -> Take:
    """The release flow as a subflow. One that fails (a stage raised past its retries) is the checkpoint's
    `failed` fate, with the run's message; the poll goes on to the next checkpoint."""

    def take(checkpoint: Checkpoint) -> Outcome:
        name = f"step-{checkpoint.step}"
        state = release_checkpoint.with_options(flow_run_name=name)(
            checkpoint.as_dict(), config, settings.run, return_state=True
        )
        if state.is_completed():
            return Outcome(**state.result())
        why = f"release run {name} {state.type.value.lower()}" + (f": {state.message}" if state.message else "")
        get_run_logger().error("step %d: %s", checkpoint.step, why)
        return Outcome(checkpoint.step, checkpoint.uri, FAILED, why)

    return take


def _through(deployment: str, settings: Settings, config: str | None) -> tuple[Take, Settle]:
    line = settings.release.line

    def take(checkpoint: Checkpoint) -> Outcome:
        run = orchestration.start_release_run(deployment, line, checkpoint, config, settings.run)
        return Outcome(checkpoint.step, checkpoint.uri, RunState.STARTED, f"release run {run.name}")

    def settle(checkpoint: Checkpoint) -> Outcome | None:
        run = orchestration.release_run(line, checkpoint)
        if run is None:
            return take(checkpoint)  # selected, but the run was never created: start it now
        state = run.state_type
        if state is None:
            return None
        if state == StateType.CRASHED and run.run_count <= settings.pipeline.crash_retries:
            orchestration.retry(run, f"crashed (try {run.run_count}); scheduled again by the watch flow")
            get_run_logger().info("release run %s crashed: scheduled again", run.name)
            return None
        ended = ENDED.get(state)
        if ended is None:
            return None
        said = run.state.message if run.state and run.state.message else ""
        retried = f" after {run.run_count} tries" if state == StateType.CRASHED else ""
        why = f"release run {run.name} {state.value.lower()}{retried}" + (f": {said}" if said else "")
        return Outcome(checkpoint.step, checkpoint.uri, ended, why)

    return take, settle


@flow(name="watch-run")
def watch_run(config: str | None = None, source: str | None = None) -> list[dict[str, Any]]:
    """One poll of each run (`runs`, or the one `watch.source`; `source` overrides both): every selected checkpoint
    released, turned away, or handed to its own release run. The runs share the training slot."""
    overrides: dict[str, Any] = {"watch": {"source": source}, "runs": []} if source else {}
    settings = load_settings(Path(config) if config else None, **overrides)
    orchestration.ensure_slot(settings.pipeline)
    if settings.pipeline.release_deployment is not None:
        orchestration.ensure_crash_detection(settings.pipeline)
    names: list[str | None] = [run.name for run in settings.runs] or [None]
    return [outcome for name in names for outcome in _poll(settings.for_run(name), config)]


def _poll(settings: Settings, config: str | None) -> list[dict[str, Any]]:
    deployment = settings.pipeline.release_deployment
    if deployment is None:
        outcomes = watch_once(settings, take=_in_place(settings, config))
    else:
        take, settle = _through(deployment, settings, config)
        outcomes = watch_once(settings, take=take, settle=settle)
    if outcomes and settings.pipeline.screening:  # the run's count: GPU time spent screening, post-trainings saved
        get_run_logger().info("screening on %s: %s", settings.release.line, screening_budget(settings).said())
    return [o.as_dict() for o in outcomes]
