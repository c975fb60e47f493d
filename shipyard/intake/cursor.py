"""Where an S3 run's next checkpoints can appear, so that a poll lists only there.

S3 lists keys in lexicographic order, 1,000 per call, and step numbers are not
zero-padded: `checkpoint-10000/` sorts between `checkpoint-1000/` and
`checkpoint-1001/`. A `Cursor` remembers, for each numbered series of
checkpoint directories (`run/checkpoint-`), the newest step and the spacing of
saves. Names of the next `LOOKAHEAD` saves share a prefix, so one LIST with
`Prefix` and `StartAfter` finds them, and one more when the window crosses to
a wider step number. Checkpoints seen but not yet decided, below the newest,
and veRL/DeepSpeed marker files are listed by exact prefix. A full listing
every so many polls catches whatever lies outside the windows (a run restarted
at a lower step, a `save_pretrained` directory with a `COMPLETE` marker).
A cursor is kept in the home between polls (`load`, `save`): a deployed watch
starts a new process for each poll, and without it every poll would list the
whole prefix. One that cannot be read is a fresh cursor (a full listing).
Used by `S3Source`.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from shipyard.caches import write_whole
from shipyard.intake.layouts import DEEPSPEED_MARKER, VERL_MARKER, numbered

LOOKAHEAD = 10  # how many saves after the newest one a window covers


@dataclass(frozen=True)
class Window:
    """The keys under `prefix` that sort after `start_after` (relative to the source's prefix)."""

    prefix: str
    start_after: str = ""


@dataclass
class Cursor:
    """What a source's listings taught about where its next checkpoints will be."""

    newest: dict[str, int] = field(default_factory=dict)  # series -> newest step seen
    spacing: dict[str, int] = field(default_factory=dict)  # series -> steps between its last two saves
    seen: dict[str, tuple[str, int]] = field(default_factory=dict)  # checkpoint dir -> (series, step)
    markers: set[str] = field(default_factory=set)
    polls: int = 0

    def learn(self, files: Iterable[str]) -> None:
        """Fold a listing (full or windowed) into the cursor."""
        found: dict[str, tuple[str, int]] = {}
        for f in files:
            path = PurePosixPath(f)
            if path.name in (VERL_MARKER, DEEPSPEED_MARKER):
                self.markers.add(f)
            for parent in path.parents:  # the checkpoint directory may hold its files in subdirectories
                if (series_step := numbered(str(parent))) is not None:
                    found[str(parent)] = series_step
                    break
        for directory, (series, step) in sorted(found.items(), key=lambda item: item[1][1]):
            self.seen[directory] = (series, step)
            newest = self.newest.get(series)
            if newest is None or step > newest:
                self.spacing[series] = step - newest if newest is not None else step
                self.newest[series] = step

    def windows(self, decided: Collection[str]) -> list[Window]:
        """Where to list on the next poll, given the checkpoint directories already decided."""
        self.seen = {d: s for d, s in self.seen.items() if d not in decided}
        found = [w for series, step in self.newest.items() for w in step_windows(series, step, self.spacing[series])]
        pending = [Window(f"{d}/") for d, (series, step) in self.seen.items() if step < self.newest[series]]
        return found + pending + [Window(m) for m in sorted(self.markers)]


def load(path: Path) -> Cursor | None:
    """The cursor kept at `path`, or None (none kept, or unreadable: the next listing is a full one)."""
    try:
        data = json.loads(path.read_text())
        return Cursor(
            newest={str(k): int(v) for k, v in data["newest"].items()},
            spacing={str(k): int(v) for k, v in data["spacing"].items()},
            seen={str(k): (str(v[0]), int(v[1])) for k, v in data["seen"].items()},
            markers={str(m) for m in data["markers"]},
            polls=int(data["polls"]),
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


def save(cursor: Cursor, path: Path) -> None:
    """Keep `cursor` at `path` (written whole, then renamed into place)."""
    write_whole(path, json.dumps(asdict(cursor) | {"markers": sorted(cursor.markers)}))


def step_windows(series: str, newest: int, spacing: int) -> list[Window]:
    """Windows holding the directories of steps `newest` .. `newest + LOOKAHEAD * spacing` of `series`."""
    low, high = str(newest), str(newest + LOOKAHEAD * max(spacing, 1))
    if len(high) == len(low):
        return [Window(series + _common(low, high), series + low)]
    wider = _common("1" + "0" * len(low), high) if len(high) == len(low) + 1 else ""
    return [Window(series + _common(low, "9" * len(low)), series + low), Window(series + wider)]


def _common(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]
