"""The checkpoint vocabulary every stage shares: a checkpoint as the watcher sees it, and where it stands.

A checkpoint's own states (found, copied, refused, taken, released …) are apart from the states of the release
run it was handed to elsewhere (started, done, failed …); a watcher's record of a checkpoint holds either. Imports
nothing of Shipyard's but the event vocabulary.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from shipyard.events import EventType

TRAINER_STATE = "trainer_state.json"
# Training state a trainer saves beside the weights: pickles that are never opened, copied or published
# (under data parallelism one RNG state per rank: rng_state_<rank>.pth).
TRAINER_STATE_PICKLES = frozenset({"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "scaler.pt"})
RANK_RNG_STATE = re.compile(r"rng_state_\d+\.pth")


def is_trainer_pickle(name: str) -> bool:
    """Whether the file `name` (a base name) is a trainer's own state, never weights."""
    return name in TRAINER_STATE_PICKLES or RANK_RNG_STATE.fullmatch(name) is not None


class CheckpointState(StrEnum):
    """Where a checkpoint is on its way from the run to a release."""

    INCOMPLETE = "incomplete"  # still being written, or changed while copied: looked at again next poll
    COMPLETE = "complete"  # every file there (and, once inspected, snapshotted and valid)
    GONE = "gone"  # rotated away by the trainer before it could be copied
    INVALID = "invalid"  # refused; the reason names the file
    SKIPPED = "skipped"  # passed over by the selection policy, or superseded by a newer one
    SELECTED = "selected"  # taken: in flight through the pipeline
    SCREENED_OUT = "screened_out"
    GATE_FAILED = "gate_failed"
    RELEASED = "released"


class RunState(StrEnum):
    """Where the release run a checkpoint was handed to (a deployment's run) stands."""

    STARTED = "started"  # its release run was started elsewhere; settled on a later poll
    DONE = "done"  # its release run completed: its own fate is in the ledger
    FAILED = "failed"  # its release run failed, crashed past its retries, or was cancelled


State = CheckpointState | RunState


def parse_state(value: str) -> State:
    """A state from its JSON string (a watcher's record, a flow's result); a ValueError names an unknown one."""
    for kind in (CheckpointState, RunState):
        if value in kind.__members__.values():
            return kind(value)
    raise ValueError(f"{value!r} is neither a checkpoint state nor a run state")


FATE_EVENTS: dict[State, EventType] = {  # the one map from where a checkpoint ended to the ledger event that records it
    CheckpointState.GONE: EventType.SKIPPED,
    CheckpointState.INVALID: EventType.REFUSED,
    CheckpointState.SKIPPED: EventType.SKIPPED,
    CheckpointState.SCREENED_OUT: EventType.SKIPPED,
    CheckpointState.GATE_FAILED: EventType.GATE_FAILED,
    CheckpointState.RELEASED: EventType.RELEASED,
    RunState.FAILED: EventType.FAILED,
}


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as the watcher sees it; `digest`, `files` and `path` are set once snapshotted."""

    source_uri: str
    run_id: str
    step: int
    layout: str
    uri: str
    state: State
    reason: str = ""
    digest: str = ""
    path: str = ""  # the snapshot directory
    files: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    converted_by: str = ""  # the converter that made `path` from a sharded training checkpoint, if one did

    def __post_init__(self) -> None:  # from JSON (a decision log, a flow's parameters) a plain string: checked
        object.__setattr__(self, "state", parse_state(self.state))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
