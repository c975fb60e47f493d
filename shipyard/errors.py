"""The one exception tree of Shipyard. Every error Shipyard raises on purpose is here.

    ShipyardError                 anything Shipyard raises on purpose
    ├── ConfigError               a settings file, environment variable or argument is wrong
    ├── CheckpointError           a checkpoint cannot be used: names the file and the reason
    │   ├── InvalidCheckpoint     complete but broken or unsafe (bad header, NaN, pickle, escape)
    │   └── CheckpointInFlux      changed or vanished while being copied: no verdict, the next poll looks again
    ├── SourceError               a checkpoint source cannot be listed or read
    ├── StateError                Shipyard's own state on disk is corrupt (names file and line)
    ├── StoreError                a release store cannot be read or written
    ├── LedgerError               the release ledger is inconsistent (broken chain, missing blob)
    ├── TrustError                refused: not allowed by the store's signed policy, or the store is not the pinned one
    └── DemoRunError              the demo RL run cannot start or continue

Messages say what was expected, what was found, and which file, key or object.
Later stages add their branches here, not in modules of their own.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointInFlux",
    "ConfigError",
    "DemoRunError",
    "InvalidCheckpoint",
    "LedgerError",
    "ShipyardError",
    "SourceError",
    "StateError",
    "StoreError",
    "TrustError",
]


class ShipyardError(Exception):
    """Base of every error Shipyard raises on purpose."""


class ConfigError(ShipyardError):
    """A settings file, environment variable or argument has a wrong key or value."""


class CheckpointError(ShipyardError):
    """A checkpoint is incomplete or invalid; the message names the file and the reason."""


class InvalidCheckpoint(CheckpointError):
    """A complete checkpoint that is broken or unsafe: a bad header, NaN weights, a pickle, an escaping path."""


class CheckpointInFlux(CheckpointError):
    """A checkpoint's files changed or vanished while being copied; `gone` when its directory was rotated away."""

    def __init__(self, message: str, gone: bool = False) -> None:
        super().__init__(message)
        self.gone = gone


class SourceError(ShipyardError):
    """A checkpoint source (local directory, S3 prefix, Hub repo) cannot be listed or read."""


class StateError(ShipyardError):
    """Shipyard's own state on disk (for example a watcher's decision log) is corrupt."""


class StoreError(ShipyardError):
    """A release store (local directory, S3 prefix) cannot be read or written."""


class LedgerError(ShipyardError):
    """The release ledger is inconsistent: a broken hash chain, a tampered event, a missing blob."""


class TrustError(ShipyardError):
    """Refused: the signed policy does not allow it, a signature is missing, or the store's root is not pinned."""


class DemoRunError(ShipyardError):
    """The demo RL run cannot start or continue (for example, its output directory is taken)."""
