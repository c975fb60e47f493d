"""The one exception tree of Shipyard, grouped by what the caller can do about an error.

    ShipyardError                 anything Shipyard raises on purpose
    ├── NotFound                  name something that exists (a store, line, release, channel, file)     404
    ├── NotAllowed                get the right key or approver; the store's signed policy decides        403
    │   └── TrustError            refused by the signed policy, or the store is not the pinned one
    ├── Conflict                  the thing is already there or changed meanwhile; look, then retry       409
    ├── BadInput                  fix the argument, setting or file named in the message                  400
    │   ├── ConfigError           a settings file, environment variable or argument is wrong
    │   └── CheckpointError       a checkpoint cannot be used: names the file and the reason
    │       └── InvalidCheckpoint     complete but broken or unsafe (bad header, NaN, pickle, escape)
    ├── TryLater                  nothing to fix: it is changing now; the next poll or try looks again    503
    │   └── CheckpointInFlux      a checkpoint changed or vanished while being copied
    ├── Unavailable               a service or store did not answer or failed; check it, then retry       503
    │   ├── SourceError           a checkpoint source cannot be listed or read
    │   ├── StoreError            a release store cannot be read or written
    │   ├── OrchestrationError    Prefect's API cannot be started or reached, or a flow run failed
    │   └── TrainingError         a post-training job failed (a rank crashed, ran out of memory); ends with its log
    └── Corrupt                   stored state is damaged; repair or restore it                          500
        ├── StateError            Shipyard's own state on disk is corrupt (names file and line)
        └── LedgerError           the release ledger is inconsistent (broken chain, missing blob)

Messages say what was expected, what was found, and which file, key or object; `context` carries the same
as data (for `--json` and the dashboard). The stages add their branches here, not in modules of their own; the
demo, which sits on top, keeps its one (`DemoRunError`, a Conflict) to itself.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BadInput",
    "CheckpointError",
    "CheckpointInFlux",
    "ConfigError",
    "Conflict",
    "Corrupt",
    "InvalidCheckpoint",
    "LedgerError",
    "NotAllowed",
    "NotFound",
    "OrchestrationError",
    "ShipyardError",
    "SourceError",
    "StateError",
    "StoreError",
    "TrainingError",
    "TrustError",
    "TryLater",
    "Unavailable",
]


class ShipyardError(Exception):
    """Base of every error Shipyard raises on purpose; `context` names the objects involved."""

    kind: ClassVar[str] = "error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.context = context

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.kind, "type": type(self).__name__, "message": str(self), **self.context}


class NotFound(ShipyardError):
    """What was named does not exist: a store, a line, a release, a channel, a file."""

    kind = "not_found"
    http_status = 404


class NotAllowed(ShipyardError):
    """Refused: the caller may not do this."""

    kind = "not_allowed"
    http_status = 403


class TrustError(NotAllowed):
    """Refused: the signed policy does not allow it, a signature is missing, or the store's root is not pinned."""


class Conflict(ShipyardError):
    """The thing is already there, already decided, or changed while this ran."""

    kind = "conflict"
    http_status = 409


class BadInput(ShipyardError):
    """An argument, setting or file has a wrong value; the message names it."""

    kind = "bad_input"
    http_status = 400


class ConfigError(BadInput):
    """A settings file, environment variable or argument has a wrong key or value."""


class CheckpointError(BadInput):
    """A checkpoint is incomplete or invalid; the message names the file and the reason."""


class InvalidCheckpoint(CheckpointError):
    """A complete checkpoint that is broken or unsafe: a bad header, NaN weights, a pickle, an escaping path."""


class TryLater(ShipyardError):
    """Nothing is wrong to fix: what was read is changing now, and the next poll or try looks again."""

    kind = "try_later"
    http_status = 503


class CheckpointInFlux(TryLater):
    """A checkpoint's files changed or vanished while being copied; `gone` when its directory was rotated away."""

    def __init__(self, message: str, gone: bool = False) -> None:
        super().__init__(message)
        self.gone = gone


class Unavailable(ShipyardError):
    """A source, store or service did not answer or failed; worth retrying once it is fixed."""

    kind = "unavailable"
    http_status = 503


class SourceError(Unavailable):
    """A checkpoint source (local directory, S3 prefix, Hub repo) cannot be listed or read."""


class StoreError(Unavailable):
    """A release store (local directory, S3 prefix) cannot be read or written."""


class OrchestrationError(Unavailable):
    """Prefect's API cannot be started or reached, or a flow run it holds failed."""


class TrainingError(Unavailable):
    """A post-training job failed (a rank crashed, ran out of memory); the message ends with its log's tail."""


class Corrupt(ShipyardError):
    """Stored state is damaged: repair or restore it."""

    kind = "corrupt"


class StateError(Corrupt):
    """Shipyard's own state on disk (for example a watcher's decision log) is corrupt."""


class LedgerError(Corrupt):
    """The release ledger is inconsistent: a broken hash chain, a tampered event, a missing blob."""
