"""The release flow: a selected checkpoint → screening → post-training → gate → release, or the reason why not.

Each task wraps one stage of `shipyard.pipeline`. Compute tasks (screening,
post-training, gate) persist their results and are cached on their inputs and
source, so a crashed or re-run flow resumes without redoing a finished stage
(the stages also cache by digests underneath). Only I/O tasks (champion pull,
publishing, recording a fate) retry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from shipyard import pipeline
from shipyard.settings import Settings, load_settings
from shipyard.watch import Checkpoint


@task(retries=3, retry_delay_seconds=[1, 5, 20])
def pull_champion(settings: Settings) -> Path | None:
    return pipeline.champion(settings, pipeline.release_store(settings))


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def screen(checkpoint: Checkpoint, champion: Path | None, settings: Settings) -> tuple[bool, str]:
    return pipeline.screen(checkpoint, champion, settings)


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def post_train(checkpoint: Checkpoint, settings: Settings) -> Path:
    return pipeline.make_candidate(checkpoint, settings)


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def gate(candidate: Path, champion: Path | None, checkpoint: Checkpoint, settings: Settings) -> tuple[bool, str, Path]:
    return pipeline.gate_candidate(candidate, champion, checkpoint, settings)


@task(retries=3, retry_delay_seconds=[1, 5, 20])
def publish(candidate: Path, report: Path, settings: Settings) -> int:
    return pipeline.publish_candidate(candidate, report, settings)


@task(retries=3, retry_delay_seconds=[1, 5, 20])
def record(kind: str, checkpoint: Checkpoint, reason: str, settings: Settings) -> None:
    pipeline.record_fate(pipeline.release_store(settings), kind, checkpoint, settings.release.line, reason)


@flow(name="release-checkpoint")
def release_checkpoint(checkpoint: dict[str, Any], config: str | None = None) -> dict[str, Any]:
    settings = load_settings(Path(config) if config else None)
    ckpt = Checkpoint(**checkpoint)
    champion = pull_champion(settings)
    passed, why = screen(ckpt, champion, settings)
    if not passed:
        record("skipped", ckpt, f"screening: {why}", settings)
        return pipeline.Outcome(ckpt.step, ckpt.uri, "screened_out", why).as_dict()
    candidate = post_train(ckpt, settings)
    passed, failed, report = gate(candidate, champion, ckpt, settings)
    if not passed:
        record("gate_failed", ckpt, failed, settings)
        return pipeline.Outcome(ckpt.step, ckpt.uri, "gate_failed", failed, report=str(report / "gate.md")).as_dict()
    version = publish(candidate, report, settings)
    return pipeline.Outcome(ckpt.step, ckpt.uri, "released", "", version, str(report / "gate.md")).as_dict()


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(release_checkpoint(json.loads(sys.argv[1])), indent=1))
