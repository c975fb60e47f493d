"""Which complete checkpoints the pipeline takes, and the watcher's memory of what it decided.

`decide` is a pure function of the scanned checkpoints, what was decided
before, the policy and the clock: every N steps; a minimum wall-clock interval
between selections; at most K in flight; when a backlog builds up, the newest
is taken and the older ones are skipped as superseded. `WatchState` keeps the
decisions per source in one JSON file, replaced atomically, so a restart
neither loses nor repeats a checkpoint. Called by the watcher.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from shipyard.settings import WatchSettings
from shipyard.sources import Source
from shipyard.watch import Checkpoint, scan

SCHEMA_VERSION = 1
IN_FLIGHT = "selected"


@dataclass
class WatchState:
    """What the watcher decided for one source: checkpoint records by uri, and when it last selected."""

    source_uri: str
    decided: dict[str, Checkpoint] = field(default_factory=dict)
    last_selected_at: float | None = None

    @property
    def in_flight(self) -> int:
        return sum(c.state == IN_FLIGHT for c in self.decided.values())

    def finish(self, uri: str, state: str, reason: str = "") -> None:
        """Record the pipeline's outcome for a selected checkpoint, freeing its slot."""
        self.decided[uri] = replace(self.decided[uri], state=state, reason=reason)


def state_file(directory: Path, source_uri: str) -> Path:
    return directory / f"{hashlib.sha256(source_uri.encode()).hexdigest()[:16]}.json"


def load_state(directory: Path, source_uri: str) -> WatchState:
    path = state_file(directory, source_uri)
    if not path.exists():
        return WatchState(source_uri)
    data = json.loads(path.read_text())
    decided = {uri: Checkpoint(**c) for uri, c in data["decided"].items()}
    return WatchState(data["source_uri"], decided, data["last_selected_at"])


def save_state(directory: Path, state: WatchState) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = state_file(directory, state.source_uri)
    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "source_uri": state.source_uri,
        "last_selected_at": state.last_selected_at,
        "decided": {uri: asdict(c) for uri, c in state.decided.items()},
    }
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with tmp.open("w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def decide(scanned: list[Checkpoint], state: WatchState, policy: WatchSettings, now: float) -> list[Checkpoint]:
    """Decide the fate of newly seen checkpoints, record it in `state`, and return the ones selected."""
    fresh = [c for c in scanned if c.uri not in state.decided and c.state in ("complete", "invalid")]
    for c in fresh:
        if c.state == "invalid":
            state.decided[c.uri] = c
        elif c.step % policy.every_n_steps:
            state.decided[c.uri] = replace(
                c, state="skipped", reason=f"step {c.step} is not a multiple of every_n_steps={policy.every_n_steps}"
            )
    eligible = sorted((c for c in fresh if c.uri not in state.decided), key=lambda c: c.step)
    if not eligible:
        return []
    if policy.newest_first:
        newest = eligible[-1]
        for c in eligible[:-1]:
            state.decided[c.uri] = replace(c, state="skipped", reason=f"superseded by step {newest.step}")
        eligible = [newest]
    selected = []
    for c in eligible:
        waited = now - state.last_selected_at if state.last_selected_at is not None else float("inf")
        if state.in_flight >= policy.max_in_flight or waited < policy.min_interval_seconds:
            break  # stays undecided; a later poll takes it, or a newer one supersedes it
        state.decided[c.uri] = replace(c, state=IN_FLIGHT, reason="")
        state.last_selected_at = now
        selected.append(state.decided[c.uri])
    return selected


def poll(
    source: Source, home: Path, policy: WatchSettings, now: float, state: WatchState | None = None
) -> tuple[list[Checkpoint], WatchState]:
    """Scan what is new in `source`, decide, persist; return the selected checkpoints and the state.

    A long-running watcher passes back the state it got, so a poll reads no
    state file and writes one only when something was decided.
    """
    state = state or load_state(home / "watch", source.uri)
    before = len(state.decided), state.in_flight
    scanned = scan(source, home / "snapshots", policy.allow_pickle_weights, skip=state.decided.keys())
    selected = decide(scanned, state, policy, now)
    if (len(state.decided), state.in_flight) != before:
        save_state(home / "watch", state)
    return selected, state


def view(scanned: list[Checkpoint], state: WatchState) -> list[Checkpoint]:
    """What the watcher sees: decided checkpoints as decided, the rest as scanned, by step."""
    merged = {c.uri: c for c in scanned} | state.decided
    return sorted(merged.values(), key=lambda c: (c.step, c.uri))
