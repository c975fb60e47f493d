"""Which complete checkpoints the pipeline takes, and the watcher's memory of what it decided.

`select` is a function of the listed checkpoints, what was decided before,
the policy, the clock and how to inspect (snapshot and validate) one
checkpoint: every N steps; a minimum wall-clock interval between selections;
at most K in flight; when a backlog builds up, the newest valid one is taken
and the older ones are skipped as superseded. Only a checkpoint about to be
taken is copied. `WatchState` is a fold of
an append-only decision log per source (one JSON line per decision, fsynced),
so a restart neither loses nor repeats a checkpoint and a poll writes only
what it decided. Called by the watcher.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from shipyard.caches import Usage, collect
from shipyard.checkpoints import Checkpoint, CheckpointState, State
from shipyard.errors import StateError
from shipyard.intake.scan import DEFAULT_CONVERT, list_run
from shipyard.intake.sources import Source
from shipyard.settings import ConvertSettings, Settings, WatchSettings

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
IN_FLIGHT = CheckpointState.SELECTED


@dataclass
class WatchState:
    """What the watcher decided for one source: checkpoint records by uri, and when it last selected.

    Whoever changes a decision (`finish`) appends it with `save_state`.
    """

    source_uri: str
    decided: dict[str, Checkpoint] = field(default_factory=dict)
    last_selected_at: float | None = None
    retaken: dict[str, int] = field(default_factory=dict)  # uri -> times taken again after the watcher died

    @property
    def in_flight(self) -> int:
        return sum(c.state == IN_FLIGHT for c in self.decided.values())

    def finish(self, uri: str, state: State, reason: str = "") -> None:
        """Record the pipeline's outcome for a selected checkpoint, freeing its slot."""
        self.decided[uri] = replace(self.decided[uri], state=state, reason=reason)


def state_file(directory: Path, source_uri: str) -> Path:
    return directory / f"{hashlib.sha256(source_uri.encode()).hexdigest()[:16]}.jsonl"


def load_state(directory: Path, source_uri: str) -> WatchState:
    """Fold the source's decision log: the last record of each checkpoint wins."""
    state = WatchState(source_uri)
    path = state_file(directory, source_uri)
    if not path.exists():
        return state
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # a torn last line from a crash mid-append: that decision was never made
            raise StateError(f"{path}:{number}: not a JSON decision record") from None
        if "retaken" in record:
            state.retaken[record["retaken"]] = state.retaken.get(record["retaken"], 0) + 1
            continue
        checkpoint = Checkpoint(**record["checkpoint"])
        state.decided[checkpoint.uri] = checkpoint
        if checkpoint.state == IN_FLIGHT:
            state.last_selected_at = max(state.last_selected_at or record["at"], record["at"])
    return state


def in_flight_digests(directory: Path) -> set[str]:
    """Every checkpoint selected and not finished, across all watched sources, by its digest (the name of its
    snapshot or converted directory)."""
    digests: set[str] = set()
    for path in sorted(directory.glob("*.jsonl")) if directory.is_dir() else []:
        with path.open() as f:
            first = f.readline()
        try:
            uri = json.loads(first)["checkpoint"]["source_uri"]
            decided = load_state(directory, uri).decided.values()
        except (json.JSONDecodeError, KeyError, TypeError, StateError):
            continue  # a torn first record decided nothing; a corrupt log stops its own watcher with the reason
        digests |= {Path(c.path).name for c in decided if c.state == IN_FLIGHT}
    return digests - {""}


def save_state(directory: Path, state: WatchState, changed: list[Checkpoint], now: float) -> None:
    """Append the `changed` decisions to the source's log, one JSON line each, and fsync."""
    if changed:
        _append(directory, state, [{"at": now, "checkpoint": asdict(c)} for c in changed])


def save_retake(directory: Path, state: WatchState, uri: str, now: float) -> None:
    """Count, in the log, that an in-flight checkpoint is taken again because the watcher died while taking it."""
    state.retaken[uri] = state.retaken.get(uri, 0) + 1
    _append(directory, state, [{"at": now, "retaken": uri}])


def _append(directory: Path, state: WatchState, records: list[dict[str, object]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"schema_version": SCHEMA_VERSION, **r}) + "\n" for r in records)
    path = state_file(directory, state.source_uri)
    if _ends_torn(path):  # drop a torn line left by a crash: that decision was never made
        with path.open("r+b") as f:
            f.truncate(f.read().rfind(b"\n") + 1)
    with path.open("a") as f:
        f.write(lines)
        f.flush()
        os.fsync(f.fileno())


def _ends_torn(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def select(
    listed: list[Checkpoint],
    state: WatchState,
    policy: WatchSettings,
    now: float,
    inspect: Callable[[Checkpoint], Checkpoint] = lambda c: c,
) -> list[Checkpoint]:
    """Decide the fate of newly listed checkpoints, record it in `state`, and return the ones selected.

    The policy decides on the listing; `inspect` (snapshot and validate) runs only on a checkpoint the policy
    would take, when a slot is free. With `newest_first`, older checkpoints are superseded only once the newest
    has been taken: an invalid newest is refused and the next newest is looked at; one still changing is
    looked at again next poll and supersedes nothing yet.
    """
    fresh = [
        c
        for c in listed
        if c.uri not in state.decided
        and c.state in (CheckpointState.COMPLETE, CheckpointState.INVALID, CheckpointState.GONE)
    ]
    for c in fresh:
        if c.state != CheckpointState.COMPLETE:
            _passed_over(state, c)
        elif c.step % policy.every_n_steps:
            state.decided[c.uri] = replace(
                c,
                state=CheckpointState.SKIPPED,
                reason=f"step {c.step} is not a multiple of every_n_steps={policy.every_n_steps}",
            )
    eligible = sorted((c for c in fresh if c.uri not in state.decided), key=lambda c: c.step)
    if policy.newest_first:
        eligible.reverse()
    selected = []
    for c in eligible:
        waited = now - state.last_selected_at if state.last_selected_at is not None else float("inf")
        if state.in_flight >= policy.max_in_flight or waited < policy.min_interval_seconds:
            break  # stays undecided; a later poll takes it, or a newer one supersedes it
        seen = inspect(c)
        if seen.state == CheckpointState.INCOMPLETE:  # changing while copied: no verdict yet
            if policy.newest_first:
                break
            continue
        if seen.state != CheckpointState.COMPLETE:
            _passed_over(state, seen)
            continue
        state.decided[c.uri] = replace(seen, state=IN_FLIGHT, reason="")
        state.last_selected_at = now
        selected.append(state.decided[c.uri])
        if policy.newest_first:
            for older in (o for o in eligible if o.step < c.step):
                state.decided[older.uri] = replace(
                    older, state=CheckpointState.SKIPPED, reason=f"superseded by step {c.step}"
                )
            break
    return selected


def _passed_over(state: WatchState, checkpoint: Checkpoint) -> None:
    gone = checkpoint.state == CheckpointState.GONE
    state.decided[checkpoint.uri] = replace(checkpoint, state=CheckpointState.SKIPPED) if gone else checkpoint


def poll(
    source: Source,
    home: Path,
    policy: WatchSettings,
    now: float,
    state: WatchState | None = None,
    convert: ConvertSettings = DEFAULT_CONVERT,
) -> tuple[list[Checkpoint], WatchState]:
    """List what is new in `source`, decide, snapshot only what is taken, persist; the selected and the state.

    A long-running watcher passes back the state it got, so a poll reads no
    state file and writes one only when something was decided.
    """
    state = state or load_state(home / "watch", source.uri)
    before = dict(state.decided)
    listing = list_run(source, skip=state.decided.keys())
    selected = select(
        listing.checkpoints(),
        state,
        policy,
        now,
        lambda c: listing.inspect(c, home, policy.allow_pickle_weights, convert),
    )
    changed = [c for uri, c in state.decided.items() if before.get(uri) is not c]  # decisions are new objects
    save_state(home / "watch", state, changed, now)
    return selected, state


def keep_within_budgets(settings: Settings, now: float, dry_run: bool = False) -> list[Usage]:
    """Evict from the home's caches what no in-flight checkpoint needs, to their budgets; say what stays over."""
    usages = collect(settings.home, settings.cache, in_flight_digests(settings.home / "watch"), now, dry_run)
    for usage in usages:
        if usage.evicted and not dry_run:
            log.info("cache %s: evicted %d entries, %d bytes held", usage.cache, len(usage.evicted), usage.after)
        if usage.after > usage.budget:
            log.warning(
                "cache %s holds %d bytes, over its budget of %d: what is left is in use",
                usage.cache,
                usage.after,
                usage.budget,
            )
    return usages


def view(scanned: list[Checkpoint], state: WatchState) -> list[Checkpoint]:
    """What the watcher sees: decided checkpoints as decided, the rest as scanned, by step."""
    merged = {c.uri: c for c in scanned} | state.decided
    return sorted(merged.values(), key=lambda c: (c.step, c.uri))
