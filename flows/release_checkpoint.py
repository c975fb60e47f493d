"""The release flow: a selected checkpoint → screening → post-training → gate → release, or the reason why not.

The flow is `shipyard.orchestration.pipeline.release_checkpoint` (the one composition of the stages)
with each stage a Prefect task. The compute tasks
(screening, post-training, gate) run while the flow holds the training slot
(a strict global concurrency limit, taken once per run), or — with
`pipeline.posttrain_deployment` / `pipeline.eval_deployment` — as runs of
their own deployments on their own pools (`flows/stages.py`), which take the
slot themselves while this run waits holding nothing; they persist their
results and are cached on their inputs and source, so a crashed or re-run
flow resumes without redoing a finished stage (the stages also cache by
digests underneath). Only I/O tasks (champion pull, publishing, recording a
fate) retry. The run leaves artifacts — the gate's checks as a table, its
report, a link to the release — mirrors the release to the Hub when
`hub.mirror_repo` is set, and, with an approval deployment configured, starts
the light approval run for the new release.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE

from shipyard.checkpoints import Checkpoint
from shipyard.events import EventType
from shipyard.orchestration import pipeline
from shipyard.orchestration import prefect as orchestration
from shipyard.registry.mirror import mirror_configured
from shipyard.registry.stores import release_store
from shipyard.settings import Settings, load_settings

IO_RETRIES: dict[str, Any] = {"retries": 3, "retry_delay_seconds": [1, 5, 20]}


@task(**IO_RETRIES)
def pull_champion(settings: Settings) -> Path | None:
    return pipeline.champion(settings, release_store(settings))


def stage_run(
    deployment: str | None,
    what: str,
    here: Callable[[], Any],
    checkpoint: Checkpoint,
    settings: Settings,
    **parameters: Any,
) -> Any:
    """Stage `what` in this run (`here()`, under the training slot unless the run holds it already), or as a run
    of its deployment, found again by this release run after a crash (same key). A stage run reads its own
    settings: only the run's name and paths inside the shared home go to it."""
    if deployment is None:
        with orchestration.training_slot(settings.pipeline, held=orchestration.split(settings.pipeline)):
            return here()
    parameters = {k: str(v) if isinstance(v, Path) else v for k, v in parameters.items()}
    parameters |= {"checkpoint": checkpoint.as_dict(), "run": settings.run}
    name = f"{what}-{settings.release.line}-step-{checkpoint.step}"
    return orchestration.run_stage(deployment, name, parameters, settings.home)


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def screen(checkpoint: Checkpoint, champion: Path | None, settings: Settings) -> dict[str, Any]:
    screened: dict[str, Any] = stage_run(
        settings.pipeline.eval_deployment,
        "screen",
        lambda: pipeline.screen(checkpoint, champion, settings),
        checkpoint,
        settings,
        stage="screen",
        champion=champion,
    )
    return screened


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def post_train(checkpoint: Checkpoint, settings: Settings) -> Path:
    deployment = settings.pipeline.posttrain_deployment
    return Path(
        stage_run(deployment, "posttrain", lambda: pipeline.make_candidate(checkpoint, settings), checkpoint, settings)
    )


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def gate(candidate: Path, champion: Path | None, checkpoint: Checkpoint, settings: Settings) -> tuple[bool, str, Path]:
    passed, failed, report = stage_run(
        settings.pipeline.eval_deployment,
        "gate",
        lambda: pipeline.gate_candidate(candidate, champion, checkpoint, settings),
        checkpoint,
        settings,
        stage="gate",
        champion=champion,
        candidate=candidate,
    )
    return passed, failed, Path(report)


@task(**IO_RETRIES)
def publish(candidate: Path, report: Path, checkpoint: Checkpoint, settings: Settings) -> int:
    return pipeline.publish_candidate(candidate, report, checkpoint, settings)


@task(**IO_RETRIES)
def record(settings: Settings, kind: EventType, checkpoint: Checkpoint, reason: str, extra: dict[str, Any]) -> None:
    pipeline.record(settings, kind, checkpoint, reason, **extra)


@task
def mirror_release(settings: Settings) -> None:
    """Mirror the new release into `hub.mirror_repo`, if set; a failure is a warning, not a failed release."""
    mirror_configured(settings, release_store(settings), settings.release.line, get_run_logger())


def released(version: int, settings: Settings, config: str | None) -> None:
    mirror_release(settings)
    request_approval(version, settings, config)


@task(**IO_RETRIES)
def request_approval(version: int, settings: Settings, config: str | None) -> None:
    """Start the approval run for the new release through the approval deployment, if one is configured."""
    deployment, line = settings.pipeline.approval_deployment, settings.release.line
    if deployment is None:
        get_run_logger().info("v%d awaits approval: shipyard approve v%d --as NAME", version, version)
        return
    from prefect.deployments import run_deployment

    run_deployment(
        deployment,
        parameters={"line": line, "version": version, "config": config},
        flow_run_name=f"approve-{line}-v{version}",
        tags=orchestration.approval_tags(line, version),
        idempotency_key=f"shipyard-approval:{line}:v{version}",
        timeout=0,
        as_subflow=False,
    )


def _artifacts(checkpoint: Checkpoint, report: Path, settings: Settings, version: int | None) -> None:
    """The gate's checks as a table, its markdown report, and (when released) a link to the release."""
    key = re.sub(r"[^a-z0-9-]+", "-", f"{settings.release.line}-step-{checkpoint.step}".lower())
    checks = json.loads((report / "gate.json").read_text())["checks"]
    rows = [{k: c.get(k) for k in ("name", "passed", "statistic", "threshold", "p_value", "detail")} for c in checks]
    create_table_artifact(rows, key=f"gate-checks-{key}", description=f"Gate checks, step {checkpoint.step}")
    create_markdown_artifact((report / "gate.md").read_text(), key=f"gate-report-{key}")
    if version is not None:
        store = release_store(settings)
        create_link_artifact(
            store.uri, link_text=f"{settings.release.line} v{version} in {store.uri}", key=f"release-{key}"
        )


def stages(config: str | None) -> pipeline.Stages:
    """The pipeline's stages as this flow's tasks, under the training slot, leaving artifacts."""
    return pipeline.Stages(
        champion=pull_champion,
        screen=screen,
        post_train=post_train,
        gate=gate,
        publish=publish,
        record=record,
        slot=lambda s: orchestration.training_slot(s.pipeline, held=not orchestration.split(s.pipeline)),
        gated=_artifacts,
        released=lambda version, s: released(version, s, config),
    )


@flow(name="release-checkpoint")
def release_checkpoint(checkpoint: dict[str, Any], config: str | None = None, run: str | None = None) -> dict[str, Any]:
    """One checkpoint of the run (`run` of the settings' `runs`, if several) through the pipeline."""
    settings = load_settings(Path(config) if config else None).for_run(run)
    orchestration.ensure_slot(settings.pipeline)
    return pipeline.release_checkpoint(Checkpoint(**checkpoint), settings, stages(config)).as_dict()
