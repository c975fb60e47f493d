"""The heavy stages as flows of their own, for deployments on their own pools (the split form of the release flow).

With `pipeline.posttrain_deployment` and `pipeline.eval_deployment` set, the release run (on a light pool) starts
these through their deployments and waits holding nothing: post-training on, say, an 8-GPU job, screening and the
gate on a 1-GPU job. Each takes the training slot itself. What they make stays in the shared Shipyard home, keyed
by digest (candidates, eval results, gate reports); what they return is a path or a verdict, also left in that
home for the release run. A stage run reads its own settings (its worker's SHIPYARD_CONFIG and environment);
it is given only the run's name and paths inside the shared home, rebased from the sender's mount (`home`) onto
its own (`shipyard.orchestration.crossing`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow
from prefect.runtime import flow_run

from shipyard.checkpoints import Checkpoint
from shipyard.orchestration import pipeline
from shipyard.orchestration import prefect as orchestration
from shipyard.orchestration.crossing import rebase, write_stage_result
from shipyard.settings import Settings, load_settings


def _settings(run: str | None) -> Settings:
    settings = load_settings().for_run(run)
    orchestration.ensure_slot(settings.pipeline)
    return settings


def _here(value: Any, home: str | None, settings: Settings) -> Any:
    """A path the release run sent, as this pool mounts the shared home."""
    return rebase(value, Path(home), settings.home) if home else value


@flow(name="posttrain-checkpoint", persist_result=True)
def posttrain_checkpoint(checkpoint: dict[str, Any], run: str | None = None, home: str | None = None) -> str:
    """Post-train one checkpoint with the configured recipe (of `run`); the candidate's directory in the shared home."""
    settings = _settings(run)
    with orchestration.training_slot(settings.pipeline):
        made = str(pipeline.make_candidate(Checkpoint(**_here(checkpoint, home, settings)), settings))
    return write_stage_result(settings.home, flow_run.id, made)


@flow(name="evaluate-checkpoint", persist_result=True)
def evaluate_checkpoint(
    stage: Literal["screen", "gate"],
    checkpoint: dict[str, Any],
    champion: str | None = None,
    candidate: str | None = None,
    run: str | None = None,
    home: str | None = None,
) -> Any:
    """Screen the checkpoint (the `Screen`, as a dict), or gate its candidate (passed, the failed checks, the
    report), against the champion."""
    settings = _settings(run)
    checkpoint, champion, candidate = _here([checkpoint, champion, candidate], home, settings)
    taken, best = Checkpoint(**checkpoint), Path(champion) if champion else None
    with orchestration.training_slot(settings.pipeline):
        if stage == "screen":
            return write_stage_result(settings.home, flow_run.id, pipeline.screen(taken, best, settings))
        if candidate is None:
            raise ValueError("the gate stage needs a candidate")
        passed, failed, report = pipeline.gate_candidate(Path(candidate), best, taken, settings)
        return write_stage_result(settings.home, flow_run.id, (passed, failed, str(report)))
