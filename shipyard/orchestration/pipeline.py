"""One checkpoint's way to a release: screen, post-train, evaluate, gate, publish — or a recorded reason why not.

Each stage is a library call that caches by digests (post-training by
checkpoint + recipe + data, evals by model + suite), so running a checkpoint
again redoes no finished stage. The champion is the head of
`pipeline.champion_channel` (stable by default), pulled once into the cache.
Every outcome ends in the ledger: `released`, or `skipped` (screening) or
`gate_failed` with the reason. The Prefect flows call these stages as tasks.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shipyard.caches import touch, write_whole
from shipyard.checkpoints import FATE_EVENTS, Checkpoint, CheckpointState, State, parse_state
from shipyard.errors import ConfigError
from shipyard.evals.gate_policy import GatePolicy, load_gate_policy
from shipyard.evals.runner import evaluate
from shipyard.evals.screening import Budget, Rule, Screen, budget, reference, verdict
from shipyard.evals.stream import Position
from shipyard.evals.suite import load_suite
from shipyard.events import EventType
from shipyard.orchestration.gating import run_gate
from shipyard.posttraining import launch
from shipyard.posttraining.posttrain import LINEAGE, posttrain
from shipyard.profiles import choice
from shipyard.registry.approval_policy import stream_of_verdict, stream_records
from shipyard.registry.publish import SCREENING, manifest, pull
from shipyard.registry.releases import Registry
from shipyard.registry.stores import Store, release_store
from shipyard.registry.trust import checked_state, sign_gate_report
from shipyard.settings import Settings

SCREENED_OUT, GATE_FAILED = CheckpointState.SCREENED_OUT, CheckpointState.GATE_FAILED
SCREEN_SUFFIX = ".screening.json"  # beside a pulled champion: its raw checkpoint's screening results
log = logging.getLogger(__name__)  # INFO as each stage starts and each fate is recorded: `shipyard demo` says them


@dataclass(frozen=True)
class Outcome:
    step: int
    uri: str
    state: State  # released, screened_out, gate_failed; or a run state (started: its run goes on elsewhere)
    reason: str = ""
    version: int | None = None
    report: str = ""

    def __post_init__(self) -> None:  # from a flow's JSON result: a plain string, checked
        object.__setattr__(self, "state", parse_state(self.state))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def champion(settings: Settings, store: Store) -> Path | None:
    """The model a candidate must beat, pulled once into `home/champions/v<N>`; None before the first promotion."""
    line, channel = settings.release.line, settings.pipeline.champion_channel
    version = checked_state(store, settings).channel(line, channel)
    return None if version is None else kept_release(settings, store, version)


def kept_release(settings: Settings, store: Store, version: int) -> Path:
    """Release `version` of the line, pulled once into `home/champions/<line>/v<N>` (and its raw checkpoint's
    screening results beside it)."""
    line = settings.release.line
    path = settings.home / "champions" / line / f"v{version}"
    if not (path / "config.json").is_file():
        release = pull(store, line, str(version), path).release
        kept = path.with_name(f"{path.name}{SCREEN_SUFFIX}")
        if screening := manifest(store, release).get("screening"):  # its raw checkpoint's, for screening
            write_whole(kept, json.dumps(screening))
    touch(path)
    return path


def screen(checkpoint: Checkpoint, champion_dir: Path | None, settings: Settings) -> dict[str, Any]:
    """Whether the raw checkpoint is worth post-training, against the raw checkpoint the champion was made from
    (`shipyard.evals.screening`): a `Screen` as a dict. The checkpoint's own per-item results are kept in the
    home by its digest, for its release to carry."""
    p = settings.pipeline
    if not p.screening:
        return Screen(True, "screening off").as_dict()
    log.info("step %d: screening", checkpoint.step)
    suite, task = load_suite(choice(settings, "screening_suite")), choice(settings, "screening_task")
    started = time.monotonic()
    [result] = evaluate(Path(checkpoint.path), [suite], settings.home)
    seconds = 0.0 if result.cached else time.monotonic() - started
    try:
        ours = reference(result, task, p.screening_metric, checkpoint.step, checkpoint.digest)
    except KeyError as exc:
        raise ConfigError(f"pipeline.screening_task: {exc.args[0]}") from None
    gate = load_gate_policy(choice(settings, "policy"))
    margin = p.screening_margin if p.screening_margin is not None else gate.regression.delta
    rule = Rule(margin, gate.alpha, gate.regression.power, gate.regression.assumed_discordance)
    theirs, unknown = _champion_screen(champion_dir)
    screened = verdict(ours, theirs, rule, unknown, seconds).as_dict()
    write_whole(screen_file(settings.home, checkpoint.digest), json.dumps(ours | {"verdict": screened}))
    return screened


def screen_file(home: Path, checkpoint_digest: str) -> Path:
    """Where a checkpoint's screening results wait for its release: in the home every pool shares."""
    return home / "screens" / f"{checkpoint_digest}.json"


def _champion_screen(champion_dir: Path | None) -> tuple[dict[str, Any] | None, str]:
    """The champion's raw checkpoint's screening results (kept beside it by `champion`), or why there are none."""
    if champion_dir is None:
        return None, "no champion yet"
    kept = champion_dir.with_name(f"{champion_dir.name}{SCREEN_SUFFIX}")
    if not kept.is_file():
        return None, f"the champion ({champion_dir.name}) has no screening results of its raw checkpoint"
    return json.loads(kept.read_text()), ""


def make_candidate(checkpoint: Checkpoint, settings: Settings, progress: bool = False) -> Path:
    """Post-train the checkpoint with the configured recipe (cached by digests); the candidate's directory."""
    recipe = choice(settings, "recipe")
    n = launch.processes(settings.pipeline.posttrain_processes)
    log.info("step %d: post-training%s", checkpoint.step, f" across {n} processes" if n > 1 else "")
    if launch.launches(settings.pipeline.posttrain_processes):
        made = launch.run(n, Path(checkpoint.path), recipe, settings.home, settings.config_file)
        return Path(made["path"])
    return posttrain(Path(checkpoint.path), recipe, settings.home, progress=progress).path


def gate_candidate(
    candidate: Path, champion_dir: Path | None, checkpoint: Checkpoint, settings: Settings
) -> tuple[bool, str, Path]:
    """Gate the candidate against the champion: passed, the failed checks, and the report directory."""
    log.info("step %d: evaluating and gating", checkpoint.step)
    policy = load_gate_policy(choice(settings, "policy"))
    trainer_state = Path(checkpoint.path) / "trainer_state.json"
    history = trainer_state if trainer_state.is_file() else None
    position, baseline = stream_of(settings, policy)
    decision, report = run_gate(candidate, champion_dir, policy, settings.home, history, None, position, baseline)
    sign_gate_report(report / "gate.json", settings, checkpoint.digest)
    return decision.passed, "; ".join(c.name for c in decision.failed), report


def stream_of(settings: Settings, policy: GatePolicy) -> tuple[Position, tuple[str, Path] | None]:
    """The next gate decision's place in the line's stream (from the decisions its ledger recorded), and the
    release the policy's guard holds candidates to, pulled (None while it does not exist yet)."""
    store = release_store(settings)
    state, events = Registry.of(store, settings).snapshot()
    line = settings.release.line
    position = Position.after(stream_records(state.policy, [e.data for e in events], line), line)
    wanted = policy.regression.baseline
    if wanted is None:
        return position, None
    stable = state.channels.get((line, "stable"), [])
    version = (stable[0] if stable else None) if wanted == "first-stable" else int(wanted[1:])
    if version is None or (line, version) not in state.releases:
        return position, None
    return position, (f"v{version}", kept_release(settings, store, version))


def publish_candidate(candidate: Path, report: Path, checkpoint: Checkpoint, settings: Settings) -> int:
    """Publish the gated candidate with its lineage, gate decision and eval scores; its version (exactly once)."""
    log.info("step %d: publishing", checkpoint.step)
    screened = screen_file(settings.home, checkpoint.digest)
    staging = _stage(candidate, report, checkpoint, screened, settings.home / "staging" / candidate.name)
    releases = registry(settings)
    published = releases.publish(staging, release_key=settings.trust.release_key)
    if notice := releases.open_store():
        log.warning(notice)
    version = published.release.version
    if published.created:
        log.info("step %d: released as v%d", checkpoint.step, version, extra={"fate": True, "released": version})
    else:
        log.info("step %d: already released as v%d", checkpoint.step, version, extra={"fate": True})
    return version


def no_slot(_: Settings) -> AbstractContextManager[None]:
    return nullcontext()


def nothing(*_: Any) -> None:
    return None


@dataclass(frozen=True)
class Stages:
    """How each stage runs. The defaults run it here (`shipyard.orchestration.watcher`, tests); the release flow
    passes its Prefect tasks, the training slot, and hooks that leave artifacts and ask for approval."""

    champion: Callable[[Settings], Path | None] = lambda s: champion(s, release_store(s))
    screen: Callable[[Checkpoint, Path | None, Settings], dict[str, Any]] = lambda c, b, s: screen(c, b, s)
    post_train: Callable[[Checkpoint, Settings], Path] = lambda c, s: make_candidate(c, s)
    gate: Callable[[Path, Path | None, Checkpoint, Settings], tuple[bool, str, Path]] = lambda p, b, c, s: (
        gate_candidate(p, b, c, s)
    )
    publish: Callable[[Path, Path, Checkpoint, Settings], int] = lambda p, r, c, s: publish_candidate(p, r, c, s)
    record: Callable[[Settings, EventType, Checkpoint, str, dict[str, Any]], None] = lambda s, k, c, why, extra: record(
        s, k, c, why, **extra
    )
    slot: Callable[[Settings], AbstractContextManager[None]] = no_slot  # held from screening to the gate's verdict
    gated: Callable[[Checkpoint, Path, Settings, int | None], None] = nothing  # after the verdict (and publishing)
    released: Callable[[int, Settings], None] = nothing


def release_checkpoint(checkpoint: Checkpoint, settings: Settings, stages: Stages = Stages()) -> Outcome:
    """Run one complete, validated, snapshotted checkpoint through the pipeline and record its fate.

    The one composition of the stages: `shipyard watch`, the demo and the release flow all come through here.
    """
    best = stages.champion(settings)
    with stages.slot(settings):
        screened = stages.screen(checkpoint, best, settings)
        if screened["passed"]:
            candidate = stages.post_train(checkpoint, settings)
            passed, failed, report = stages.gate(candidate, best, checkpoint, settings)
    numbers = {"screen": screened} if settings.pipeline.screening else {}
    if not screened["passed"]:
        why = screened["reason"]
        stages.record(settings, FATE_EVENTS[SCREENED_OUT], checkpoint, f"screening: {why}", numbers)
        return Outcome(checkpoint.step, checkpoint.uri, SCREENED_OUT, why)
    gate_report = str(report / "gate.md")
    if not passed:
        decided = json.loads((report / "gate.json").read_text())
        extra = {"report": gate_report, **numbers, **stream_of_verdict(decided)}
        stages.record(settings, FATE_EVENTS[GATE_FAILED], checkpoint, failed, extra)
        stages.gated(checkpoint, report, settings, None)
        return Outcome(checkpoint.step, checkpoint.uri, GATE_FAILED, failed, report=gate_report)
    version = stages.publish(candidate, report, checkpoint, settings)
    stages.gated(checkpoint, report, settings, version)
    stages.released(version, settings)
    return Outcome(checkpoint.step, checkpoint.uri, CheckpointState.RELEASED, "", version, gate_report)


def _stage(candidate: Path, report: Path, checkpoint: Checkpoint, screened: Path, out: Path) -> Path:
    """The candidate's files (hard links), its lineage back to the run, gate decision and eval scores, and its
    raw checkpoint's screening results (the reference later checkpoints are screened against), when screened."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for path in candidate.iterdir():
        if path.name != LINEAGE:
            os.link(path, out / path.name)
    lineage = json.loads((candidate / LINEAGE).read_text())
    lineage |= {
        "run": checkpoint.source_uri,
        "step": checkpoint.step,
        "checkpoint_uri": checkpoint.uri,
        "metrics": checkpoint.metrics,
        **({"converted_by": checkpoint.converted_by} if checkpoint.converted_by else {}),
    }
    if screened.is_file():
        shutil.copyfile(screened, out / SCREENING)
        lineage["screen"] = json.loads(screened.read_text()).get("verdict")
    (out / LINEAGE).write_text(json.dumps(lineage, indent=1, sort_keys=True) + "\n")
    for name in ("gate.json", "evals.json"):
        shutil.copyfile(report / name, out / name)
    return out


def registry(settings: Settings) -> Registry:
    """The configured release line in the configured store, announcing what it writes."""
    return Registry.of(release_store(settings), settings)


def screening_budget(settings: Settings) -> Budget:
    """What screening has cost and saved on the line so far, from the screens its fates recorded."""
    _, events = registry(settings).snapshot()
    return budget(e.data.get("screen") for e in events if e.data.get("line") == settings.release.line)


def record(settings: Settings, kind: EventType, checkpoint: Checkpoint, reason: str, **extra: Any) -> None:
    """Record a checkpoint's fate in the release ledger (and so send it to the webhook)."""
    registry(settings).record_fate(kind, checkpoint, reason, **extra)
    log.info("step %d: %s — %s", checkpoint.step, kind.replace("_", " "), reason, extra={"fate": True})
