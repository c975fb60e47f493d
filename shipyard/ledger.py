"""The release ledger: an append-only, hash-chained log of events, the one authority on releases.

Each event is a small JSON object written put-if-absent at the next sequence
number (`ledger/events/<seq>.json`), carrying the digest of the event before
it and a writer nonce. When a write does not go through, or its answer is
lost, the writer reads the slot back: its own nonce there means the write won
(a lost acknowledgement looks exactly like a lost race otherwise). Versions,
channels, approvals and channel history are folds over the log (`fold`).
Appends are built from the state they extend (`append(build)`), so two
publishers racing on one candidate produce one release. A `Ledger` keeps
the events it has read and probes the slots after them, so an append reads
only what is new, however long the log. Called by the publisher, promotion, approvals and `shipyard ledger verify`.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from shipyard.errors import LedgerError, StoreError
from shipyard.stores import Store

SCHEMA_VERSION = 1
EVENTS = "ledger/events/"
TYPES = ("released", "approved", "rejected", "promoted", "rolled_back", "mirrored", "skipped", "refused", "gate_failed")
ATTEMPTS = 100


@dataclass(frozen=True)
class Event:
    seq: int
    type: str
    data: dict[str, Any]
    at: float
    nonce: str
    prev: str  # digest of the event before; "" for the first
    schema_version: int = SCHEMA_VERSION

    def body(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.body()).hexdigest()


@dataclass(frozen=True)
class Release:
    line: str
    version: int
    candidate_digest: str
    data: dict[str, Any]
    seq: int
    at: float


@dataclass
class State:
    """What the log says now: releases per line, channel history, approvals."""

    releases: dict[tuple[str, int], Release] = field(default_factory=dict)
    channels: dict[tuple[str, str], list[int]] = field(
        default_factory=dict
    )  # (line, channel) -> versions, oldest first
    approvals: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)
    mirrors: list[dict[str, Any]] = field(default_factory=list)  # data of `mirrored` events
    events: int = 0

    def latest(self, line: str) -> int:
        return max((v for (name, v) in self.releases if name == line), default=0)

    def release_of(self, line: str, candidate_digest: str) -> Release | None:
        return next(
            (r for r in self.releases.values() if r.line == line and r.candidate_digest == candidate_digest), None
        )

    def channel(self, line: str, channel: str) -> int | None:
        history = self.channels.get((line, channel), [])
        return history[-1] if history else None


def event_key(seq: int) -> str:
    return f"{EVENTS}{seq:012d}.json"


def apply(state: State, event: Event) -> None:
    """Fold one event into the state."""
    d = event.data
    state.events += 1
    if event.type == "released":
        state.releases[(d["line"], d["version"])] = Release(
            d["line"], d["version"], d["candidate_digest"], d, event.seq, event.at
        )
        state.channels.setdefault((d["line"], "candidate"), []).append(d["version"])
    elif event.type == "promoted":
        state.channels.setdefault((d["line"], d["channel"]), []).append(d["version"])
    elif event.type == "rolled_back":
        history = state.channels.setdefault((d["line"], d["channel"]), [])
        history.append(d["to_version"])
    elif event.type == "mirrored":
        state.mirrors.append(d)
    elif event.type in ("approved", "rejected"):
        state.approvals.setdefault((d["line"], d["version"]), []).append({"type": event.type, **d, "at": event.at})


def fold(events: list[Event]) -> State:
    state = State()
    for event in events:
        apply(state, event)
    return state


class Ledger:
    """The ledger in one store. Keeps the events it has read, so each refresh reads only new ones."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.events: list[Event] = []
        self.state = State()

    def refresh(self) -> State:
        """Read the events written since the last refresh, in order.

        The next slot is known (one past the last event read), so new events
        are read by probing slot after slot: no listing of the log, one GET per
        new event plus one that finds the end.
        """
        while (body := self.store.get(event_key(len(self.events) + 1))) is not None:
            event = self._parse(event_key(len(self.events) + 1), body)
            if event.seq != len(self.events) + 1:
                raise LedgerError(f"{self.store.uri}/{event_key(len(self.events) + 1)}: holds event {event.seq}")
            self.events.append(event)
            apply(self.state, event)
        return self.state

    def append(self, build: Callable[[State], tuple[str, dict[str, Any]] | None]) -> Event | None:
        """Append the event `build` makes from the current state; None if `build` decides there is nothing to do."""
        nonce = uuid.uuid4().hex
        for _ in range(ATTEMPTS):
            state = self.refresh()
            made = build(state)
            if made is None:
                return None
            kind, data = made
            if kind not in TYPES:
                raise LedgerError(f"unknown event type {kind!r}; valid: {', '.join(TYPES)}")
            prev = self.events[-1].digest if self.events else ""
            event = Event(len(self.events) + 1, kind, data, self.clock(), nonce, prev)
            if self._put(event):
                self.refresh()
                return event
        raise LedgerError(f"{self.store.uri}: could not append after {ATTEMPTS} attempts (heavy contention?)")

    def _put(self, event: Event) -> bool:
        key = event_key(event.seq)
        try:
            if self.store.put_if_absent(key, event.body()):
                return True
        except StoreError:
            pass  # the write may have gone through before the error: the read-back below tells
        there = self.store.get(key)
        return there is not None and json.loads(there).get("nonce") == event.nonce

    def _read(self, key: str) -> Event:
        body = self.store.get(key)
        if body is None:
            raise LedgerError(f"{self.store.uri}/{key}: listed but cannot be read")
        return self._parse(key, body)

    def _parse(self, key: str, body: bytes) -> Event:
        try:
            return Event(**json.loads(body))
        except (json.JSONDecodeError, TypeError) as exc:
            raise LedgerError(f"{self.store.uri}/{key}: not a ledger event ({exc})") from None

    def verify(self) -> list[str]:
        """Problems with the chain: a tampered, missing or reordered event. Empty when the ledger is sound."""
        problems = []
        prev = ""
        keys = list(self.store.keys(EVENTS))
        for number, key in enumerate(keys, 1):
            try:
                event = self._read(key)
            except LedgerError as exc:
                problems.append(str(exc))
                continue
            if key != event_key(number):
                problems.append(f"{self.store.uri}/{key}: event {number} missing before it")
            if event.prev != prev:
                problems.append(f"{self.store.uri}/{key}: does not chain to the event before (tampered or reordered)")
            prev = event.digest
        return problems
