"""The watcher loop: poll a run, record every decision's fate, and take each selected checkpoint through the pipeline.

A checkpoint that was selected but not finished (the process died) is taken
again first: every stage is cached and publishing is exactly once, so
nothing is redone or published twice. Invalid checkpoints are recorded in the
ledger as `refused`, checkpoints the policy passes over as `skipped`, both
with their reason. Called by `shipyard watch`; the Prefect watch flow does
the same with tasks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from shipyard.errors import ConfigError
from shipyard.pipeline import Outcome, record_fate, release_checkpoint, release_store
from shipyard.selection import IN_FLIGHT, WatchState, load_state, poll, save_state
from shipyard.settings import Settings
from shipyard.sources import Source, open_source
from shipyard.watch import Checkpoint


def watch_once(settings: Settings, clock: Callable[[], float] = time.time, progress: bool = False) -> list[Outcome]:
    """Process what the run holds now (resumed work first) and return each checkpoint's outcome."""
    if settings.watch.source is None:
        raise ConfigError("no source to watch: set watch.source or give --source")
    source = open_source(settings.watch.source, settings.s3, settings.hub)
    state = load_state(settings.home / "watch", source.uri)
    outcomes = [_take(c, state, settings, clock, progress) for c in _in_flight(state)]
    while True:
        before = dict(state.decided)
        selected, state = poll(source, settings.home, settings.watch, clock(), state)
        _record_passed_over(before, state, source, settings)
        if not selected:
            return outcomes
        outcomes += [_take(c, state, settings, clock, progress) for c in selected]


def _in_flight(state: WatchState) -> list[Checkpoint]:
    return sorted((c for c in state.decided.values() if c.state == IN_FLIGHT), key=lambda c: c.step)


def _take(
    checkpoint: Checkpoint, state: WatchState, settings: Settings, clock: Callable[[], float], progress: bool
) -> Outcome:
    outcome = release_checkpoint(checkpoint, settings, progress)
    state.finish(checkpoint.uri, outcome.state, outcome.reason)
    save_state(settings.home / "watch", state, [state.decided[checkpoint.uri]], clock())
    return outcome


def _record_passed_over(before: dict[str, Checkpoint], state: WatchState, source: Source, settings: Settings) -> None:
    store = release_store(settings)
    for uri, c in state.decided.items():
        if before.get(uri) is not c and c.state in ("invalid", "skipped"):
            record_fate(store, "refused" if c.state == "invalid" else "skipped", c, settings.release.line, c.reason)
