"""The heavy stages as flows of their own, for deployments on their own pools (the split form of the release flow).

With `pipeline.posttrain_deployment` and `pipeline.eval_deployment` set, the release run (on a light pool) starts
these through their deployments and waits holding nothing: post-training on, say, an 8-GPU job, screening and the
gate on a 1-GPU job. Each takes the training slot itself. What they make stays in the shared Shipyard home, keyed
by digest (candidates, eval results, gate reports); what they return is a path or a verdict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow

from shipyard.checkpoints import Checkpoint
from shipyard.orchestration import pipeline
from shipyard.orchestration import prefect as orchestration
from shipyard.settings import Settings, load_settings


def _settings(config: str | None, run: str | None) -> Settings:
    settings = load_settings(Path(config) if config else None).for_run(run)
    orchestration.ensure_slot(settings.pipeline)
    return settings


@flow(name="posttrain-checkpoint", persist_result=True)
def posttrain_checkpoint(checkpoint: dict[str, Any], config: str | None = None, run: str | None = None) -> str:
    """Post-train one checkpoint with the configured recipe (of `run`); the candidate's directory in the shared home."""
    settings = _settings(config, run)
    with orchestration.training_slot(settings.pipeline):
        return str(pipeline.make_candidate(Checkpoint(**checkpoint), settings))


@flow(name="evaluate-checkpoint", persist_result=True)
def evaluate_checkpoint(
    stage: Literal["screen", "gate"],
    checkpoint: dict[str, Any],
    champion: str | None = None,
    candidate: str | None = None,
    config: str | None = None,
    run: str | None = None,
) -> tuple[bool, str, str]:
    """Screen the checkpoint, or gate its candidate, against the champion: passed, why, the gate report ('')."""
    settings = _settings(config, run)
    taken, best = Checkpoint(**checkpoint), Path(champion) if champion else None
    with orchestration.training_slot(settings.pipeline):
        if stage == "screen":
            return (*pipeline.screen(taken, best, settings), "")
        if candidate is None:
            raise ValueError("the gate stage needs a candidate")
        passed, failed, report = pipeline.gate_candidate(Path(candidate), best, taken, settings)
        return passed, failed, str(report)
