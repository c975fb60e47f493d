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
SNAPSHOTS = "ledger/snapshots/"
SNAPSHOT_EVERY = 1000  # a fold of the log is stored every this many events, so a new reader starts from it
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
    events: int = 0  # the sequence number of the last event folded in
    head: str = ""  # its digest
    _by_candidate: dict[tuple[str, str], Release] = field(default_factory=dict, repr=False)
    _latest: dict[str, int] = field(default_factory=dict, repr=False)

    def add_release(self, release: Release) -> None:
        self.releases[(release.line, release.version)] = release
        self._by_candidate[(release.line, release.candidate_digest)] = release
        self._latest[release.line] = max(self._latest.get(release.line, 0), release.version)

    def to_json(self) -> dict[str, Any]:
        return {
            "releases": [asdict(r) for r in self.releases.values()],
            "channels": [[line, channel, history] for (line, channel), history in self.channels.items()],
            "approvals": [[line, version, items] for (line, version), items in self.approvals.items()],
            "mirrors": self.mirrors,
            "events": self.events,
            "head": self.head,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        state = cls(
            channels={(line, channel): history for line, channel, history in data["channels"]},
            approvals={(line, version): items for line, version, items in data["approvals"]},
            mirrors=data["mirrors"],
            events=data["events"],
            head=data["head"],
        )
        for r in data["releases"]:
            state.add_release(Release(**r))
        return state

    def latest(self, line: str) -> int:
        return self._latest.get(line, 0)

    def release_of(self, line: str, candidate_digest: str) -> Release | None:
        return self._by_candidate.get((line, candidate_digest))

    def channel(self, line: str, channel: str) -> int | None:
        history = self.channels.get((line, channel), [])
        return history[-1] if history else None


def event_key(seq: int) -> str:
    return f"{EVENTS}{seq:012d}.json"


def snapshot_key(seq: int) -> str:
    return f"{SNAPSHOTS}{seq:012d}.json"


def apply(state: State, event: Event) -> None:
    """Fold one event into the state."""
    d = event.data
    state.events, state.head = event.seq, event.digest
    if event.type == "released":
        state.add_release(Release(d["line"], d["version"], d["candidate_digest"], d, event.seq, event.at))
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
    """The ledger in one store. Keeps the state it has folded, so each refresh reads only new events."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.state = State()

    def refresh(self) -> State:
        """Fold in the events written since the last refresh, in order.

        A new reader starts from the latest stored fold (one every
        `SNAPSHOT_EVERY` events). The next slot is then known, so new events
        are read by probing slot after slot: no listing of the log, one GET
        per new event plus one that finds the end. Each event must chain to
        the one before it.
        """
        if self.state.events == 0:
            self._load_snapshot()
        while (body := self.store.get(event_key(self.state.events + 1))) is not None:
            key = event_key(self.state.events + 1)
            event = self._parse(key, body)
            if event.seq != self.state.events + 1 or event.prev != self.state.head:
                raise LedgerError(f"{self.store.uri}/{key}: does not follow event {self.state.events} (tampered?)")
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
            event = Event(state.events + 1, kind, data, self.clock(), nonce, state.head)
            if self._put(event):
                self.refresh()
                if event.seq % SNAPSHOT_EVERY == 0:
                    self._save_snapshot(event.seq)
                return event
        raise LedgerError(f"{self.store.uri}: could not append after {ATTEMPTS} attempts (heavy contention?)")

    def _save_snapshot(self, seq: int) -> None:
        state = self.state.to_json() if self.state.events == seq else None
        if state is not None:  # another writer may have moved on; its own snapshot will come
            self.store.put_if_absent(snapshot_key(seq), json.dumps(state).encode())

    def _load_snapshot(self) -> None:
        keys = list(self.store.keys(SNAPSHOTS))
        if not keys:
            return
        body = self.store.get(keys[-1])
        snapshot = State.from_json(json.loads(body)) if body else None
        event = self.store.get(event_key(snapshot.events)) if snapshot else None
        # Trust a fold only if it ends at the event it names.
        if snapshot is not None and event is not None and self._parse(keys[-1], event).digest == snapshot.head:
            self.state = snapshot

    def _put(self, event: Event) -> bool:
        key = event_key(event.seq)
        try:
            if self.store.put_if_absent(key, event.body()):
                return True
        except StoreError:
            pass  # the write may have gone through before the error: the read-back below tells
        there = self.store.get(key)
        return there is not None and json.loads(there).get("nonce") == event.nonce

    def event(self, seq: int) -> Event:
        """The event at `seq`, read from the store."""
        return self._read(event_key(seq))

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
        folded = State()
        snapshots = {int(k.removeprefix(SNAPSHOTS).removesuffix(".json")): k for k in self.store.keys(SNAPSHOTS)}
        for number, key in enumerate(self.store.keys(EVENTS), 1):
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
            apply(folded, event)
            if event.seq in snapshots and json.loads(self.store.get(snapshots[event.seq]) or b"{}") != folded.to_json():
                problems.append(f"{self.store.uri}/{snapshots[event.seq]}: differs from the fold of the log")
        return problems
