"""The watcher loop: poll a run, record every decision's fate, and take each selected checkpoint through the pipeline.

A checkpoint that was selected but not finished (the process died) is taken
again first: every stage is cached and publishing is exactly once, so
nothing is redone or published twice. Invalid checkpoints are recorded in the
ledger as `refused`, checkpoints the policy passes over as `skipped`, both
with their reason. How a checkpoint is taken is the caller's: the Prefect
watch flow runs the release flow in place, or starts a release run through a
deployment and later `settle`s it from that run's state. Called by the watch
flow (`shipyard watch`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from shipyard.checkpoints import FATE_EVENTS, Checkpoint, CheckpointState, RunState
from shipyard.errors import ConfigError
from shipyard.intake.selection import (
    IN_FLIGHT,
    WatchState,
    keep_within_budgets,
    load_state,
    poll,
    save_retake,
    save_state,
)
from shipyard.intake.sources import Source, open_source
from shipyard.orchestration.pipeline import Outcome, record, release_checkpoint
from shipyard.settings import Settings

Take = Callable[[Checkpoint], Outcome]
Settle = Callable[[Checkpoint], Outcome | None]


def watch_once(
    settings: Settings,
    take: Take | None = None,
    settle: Settle | None = None,
    clock: Callable[[], float] = time.time,
) -> list[Outcome]:
    """Process what the run holds now (unfinished work first) and return each checkpoint's outcome.

    `take` runs the pipeline on a checkpoint (default: in this process); an
    outcome in state `started` leaves it in flight. `settle` says how an
    in-flight checkpoint ended (None: still going); without it, unfinished
    checkpoints are taken again.
    """
    if settings.watch.source is None:
        raise ConfigError("no source to watch: set watch.source or give --source")
    take = take or (lambda c: release_checkpoint(c, settings))
    source = open_source(settings.watch.source, settings.s3, settings.hub, settings.home)
    state = load_state(settings.home / "watch", source.uri)
    outcomes = []
    for c in _in_flight(state):
        outcome = (settle or _retake(take, state, settings, clock))(c)
        if finished := _finish(c, outcome, state, settings, clock):
            outcomes.append(finished)
    while True:
        before = dict(state.decided)
        selected, state = poll(source, settings.home, settings.watch, clock(), state, settings.convert)
        _record_passed_over(before, state, source, settings)
        if not selected:
            keep_within_budgets(settings, clock())
            return outcomes
        outcomes += [o for c in selected if (o := _finish(c, take(c), state, settings, clock)) is not None]


def _retake(take: Take, state: WatchState, settings: Settings, clock: Callable[[], float]) -> Take:
    """Take in place again a checkpoint this watcher was taking when it died, `pipeline.crash_retries` times at
    most: one that kills the process each time (out of memory) is then `failed`, and the next one goes on."""

    def again(c: Checkpoint) -> Outcome:
        tries = state.retaken.get(c.uri, 0)
        if tries >= settings.pipeline.crash_retries:
            why = f"the watcher died while releasing it {tries + 1} times (pipeline.crash_retries={tries}); not retaken"
            return Outcome(c.step, c.uri, RunState.FAILED, why)
        save_retake(settings.home / "watch", state, c.uri, clock())
        return take(c)

    return again


def _in_flight(state: WatchState) -> list[Checkpoint]:
    return sorted((c for c in state.decided.values() if c.state == IN_FLIGHT), key=lambda c: c.step)


def _finish(
    checkpoint: Checkpoint, outcome: Outcome | None, state: WatchState, settings: Settings, clock: Callable[[], float]
) -> Outcome | None:
    if outcome is not None and outcome.state != RunState.STARTED:
        state.finish(checkpoint.uri, outcome.state, outcome.reason)
        save_state(settings.home / "watch", state, [state.decided[checkpoint.uri]], clock())
        if outcome.state == RunState.FAILED:  # in the ledger, the dashboard and the webhook too, not only here
            record(settings, FATE_EVENTS[RunState.FAILED], checkpoint, outcome.reason)
    return outcome


def _record_passed_over(before: dict[str, Checkpoint], state: WatchState, source: Source, settings: Settings) -> None:
    for uri, c in state.decided.items():
        if before.get(uri) is not c and c.state in (CheckpointState.INVALID, CheckpointState.SKIPPED):
            record(settings, FATE_EVENTS[c.state], c, c.reason)
