"""The release ledger: an append-only, hash-chained log of events, the one authority on releases.

Each event is a small JSON object written put-if-absent at the next sequence
number (`ledger/events/<seq>.json`), carrying the digest of the event before
it and a writer nonce. When a write does not go through, or its answer is
lost, the writer reads the slot back: its own nonce there means the write won
(a lost acknowledgement looks exactly like a lost race otherwise). Versions,
channels, approvals and channel history are folds over the log (`fold`),
under the signed policy the log itself holds (`shipyard.registry.approval_policy`): a
decision the policy does not allow is ignored, with the reason kept in
`State.ignored` for `verify`. A protected channel moves only when signed
statements that leave its current head add up (`shipyard.registry.moves`);
a `promoted` or `rolled_back` event never moves one by itself. Decisions
written before the store's first policy stay readable and never count.
Malformed events and store objects are ignored and reported, never fatal:
an event slot that does not parse (or exceeds `MAX_EVENT_BYTES`) is chained
by the digest of its bytes, so the log goes on after it.
Appends are built from the state they extend (`append(build)`), so two
publishers racing on one candidate produce one release. A `Ledger` keeps
the events it has read and probes the slots after them, so an append reads
only what is new, however long the log; every `PACK_EVERY` events the bodies
are stored again as one pack, which a new reader re-folds (trusted only when
it chains from what was read before and ends on the very event the log holds
at its last slot). Called by the publisher, promotion, approvals and `shipyard ledger verify`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

from shipyard.errors import LedgerError, StoreError
from shipyard.events import WRITTEN, EventType
from shipyard.registry import approval_policy as rules
from shipyard.registry import moves
from shipyard.registry.state import Release, State
from shipyard.registry.stores import Store

SCHEMA_VERSION = 1
EVENTS = "ledger/events/"


PACKS = "ledger/packs/"
PACK_EVERY = 1000  # the events are stored again as one pack every this many, so a new reader reads few objects
ATTEMPTS = 100
MAX_EVENT_BYTES = 1 << 20  # an event is a small JSON object; a bigger slot is not read, only reported
MAX_PACK_BYTES = 64 << 20  # a pack of PACK_EVERY events; a bigger one is not trusted (the events are read instead)


@dataclass(frozen=True)
class Event:
    seq: int
    type: EventType
    data: dict[str, Any]
    at: float
    nonce: str
    prev: str  # digest of the event before; "" for the first
    schema_version: int = SCHEMA_VERSION

    def body(self) -> bytes:
        # The fields by hand, not dataclasses.asdict: its deep copy of `data` was most of a fold's time.
        fields = {f: getattr(self, f) for f in FIELDS}
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    @cached_property
    def digest(self) -> str:
        return hashlib.sha256(self.body()).hexdigest()


FIELDS = tuple(f.name for f in fields(Event))


def event_key(seq: int) -> str:
    return f"{EVENTS}{seq:012d}.json"


def pack_key(seq: int) -> str:
    return f"{PACKS}{seq:012d}.json"


FATES = (EventType.SKIPPED, EventType.REFUSED, EventType.GATE_FAILED, EventType.FAILED)


def apply(state: State, event: Event) -> None:
    """Fold one event into the state; one the policy in force does not allow is only noted in `state.ignored`."""
    state.events, state.head = event.seq, event.digest
    try:
        why = _apply(state, event.type, event.data, event)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        why = f"malformed {event.type} event ({type(exc).__name__}: {exc})"
    if why:
        state.ignored[event.seq] = why


def _apply(state: State, kind: EventType, d: dict[str, Any], event: Event) -> str:
    """Why the event does not count ("" when it was folded in)."""
    if not isinstance(d, dict):
        return f"malformed {kind} event (its data is a {type(d).__name__}, not an object)"
    if kind == EventType.POLICY:
        new, why = rules.policy_problem(state.policy, d, event.prev)
        if new is not None:
            if state.policy is None:
                state.root, state.store_id = new.owner_fingerprints(), event.digest
            state.policy = new
        return why
    if kind == EventType.RELEASED:
        line, version = str(d["line"]), int(d["version"])
        if (line, version) in state.releases:
            return f"v{version} of {line} was released before"
        state.add_release(Release(line, version, str(d["candidate_digest"]), d, event.seq, event.at))
        if not _protected(state, "candidate"):
            _point(state, line, "candidate", version, event.seq)
        return ""
    if kind == EventType.MIRRORED:
        state.mirrors.append(d)
        return ""
    if kind in (EventType.APPROVED, EventType.REJECTED) or (
        kind == EventType.ROLLED_BACK and _protected(state, d["channel"])
    ):
        return _decision(state, kind, d, event)
    if kind in (EventType.PROMOTED, EventType.ROLLED_BACK):
        return _move(state, kind, d, event.seq)
    if kind == EventType.MALFORMED:
        return str(d["error"])
    if kind in FATES:
        state.fates.add(fate_key(kind, d))
    return ""


def fate_key(kind: str, data: dict[str, Any]) -> tuple[str, ...]:
    """What makes two fate events the same record: the line, the fate, the checkpoint and the reason."""
    return (kind, *(str(data.get(k, "")) for k in ("line", "checkpoint_uri", "checkpoint_digest", "reason")))


def _protected(state: State, channel: str) -> bool:
    return state.policy is not None and channel in state.policy.channels


def _point(state: State, line: str, channel: str, version: int, seq: int) -> None:
    state.channels.setdefault((line, channel), []).append(version)
    state.moved_at[(line, channel)] = seq


def _decision(state: State, kind: str, d: dict[str, Any], event: Event) -> str:
    """A signed word on a release; the n-th matching one moves a protected channel (`moves.tally`)."""
    line, version = str(d["line"]), int(d["version"])
    release = state.releases.get((line, version))
    if release is None:
        return f"line '{line}' has no version {version}"
    entry = {"type": kind, **d, "at": event.at, "seq": event.seq}
    if state.policy is None:  # history from before the first policy: readable, never a decision
        state.approvals.setdefault((line, version), []).append(entry | {"counts": False})
        return ""
    if why := rules.decision_problem(state.policy, kind, d, release.data.get("manifest"), state.store_id):
        return why
    state.approvals.setdefault((line, version), []).append(entry | {"counts": True})
    channel = str(d.get("channel"))
    if kind != "rejected" and _protected(state, channel):
        counted, _ = moves.tally(state, line, channel, version)
        if counted:
            _point(state, line, channel, version, event.seq)
    return ""


def _move(state: State, kind: str, d: dict[str, Any], seq: int) -> str:
    """An unsigned move: promoted, or rolled back to a version the channel held before; never a protected channel."""
    line, channel = str(d["line"]), str(d["channel"])
    version = int(d["version"])
    if (line, version) not in state.releases:
        return f"line '{line}' has no version {version}"
    if _protected(state, channel):
        if kind == EventType.PROMOTED and state.channel(line, channel) == version:
            return ""  # announces the move its signatures made
        return f"{channel} is protected: it moves only by signed statements, not by a bare {kind} event"
    if kind == EventType.ROLLED_BACK and version not in state.channels.get((line, channel), [])[:-1]:
        return f"v{version} was never on {channel} before its head"
    _point(state, line, channel, version, seq)
    return ""


def fold(events: list[Event]) -> State:
    state = State()
    for event in events:
        apply(state, event)
    return state


class Ledger:
    """The ledger in one store. Keeps the state it has folded, so each refresh reads only new events.

    `on_append` is called with each event this ledger writes, once, after it is in the store (notifications).
    """

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float] = time.time,
        on_append: Callable[[Event], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.on_append = on_append
        self.state = State()
        self._folded: list[Event] = []  # the events folded so far, in order: a long-lived reader reads each once
        self._folding = threading.RLock()  # one fold at a time: a dashboard's threads share one ledger
        self._unpacked: list[bytes] = []  # bodies of the events after the last pack boundary, for the next pack

    def refresh(self) -> State:
        """Fold in the events written since the last refresh, in order.

        A new reader first re-folds the stored packs (one every `PACK_EVERY`
        events). The next slot is then known, so new events are read by
        probing slot after slot: no listing of the log, one GET per new event
        plus one that finds the end. Each event must chain to the one before it.
        """
        with self._folding:
            return self._refresh()

    def snapshot(self) -> tuple[State, list[Event]]:
        """A copy of the refreshed state and the events folded: readable while other threads fold on."""
        with self._folding:
            self._refresh()
            return copy.deepcopy(self.state), list(self._folded)

    def _refresh(self) -> State:
        if self.state.events == 0:
            self._load_packs()
        while (body := self.store.get(key := event_key(self.state.events + 1), MAX_EVENT_BYTES)) is not None:
            event = self._slot(self.state.events + 1, body)
            if event.seq != self.state.events + 1 or event.prev != self.state.head:
                raise LedgerError(f"{self.store.uri}/{key}: does not follow event {self.state.events} (tampered?)")
            apply(self.state, event)
            self._folded.append(event)
            self._unpacked = [] if event.seq % PACK_EVERY == 1 else self._unpacked
            self._unpacked.append(body)
        return self.state

    def _slot(self, seq: int, body: bytes) -> Event:
        """The event in slot `seq`; a slot that holds no event reads as an ignored one, chained by its bytes' digest."""
        key = event_key(seq)
        try:
            if len(body) > MAX_EVENT_BYTES:
                raise LedgerError(f"{self.store.uri}/{key}: not a ledger event (larger than {MAX_EVENT_BYTES} bytes)")
            return self._parse(key, body)
        except LedgerError as exc:
            hole = Event(
                seq, EventType.MALFORMED, {"error": str(exc).rpartition(f"{key}: ")[2]}, 0.0, "", self.state.head
            )
            hole.__dict__["digest"] = hashlib.sha256(body).hexdigest()  # what the next event chains to
            return hole

    def append(self, build: Callable[[State], tuple[str, dict[str, Any]] | None]) -> Event | None:
        """Append the event `build` makes from the current state; None if `build` decides there is nothing to do."""
        nonce = uuid.uuid4().hex
        for _ in range(ATTEMPTS):
            state = self.refresh()
            made = build(state)
            if made is None:
                return None
            kind, data = made
            if kind not in WRITTEN:
                raise LedgerError(f"unknown event type {kind!r}; valid: {', '.join(WRITTEN)}")
            event = Event(state.events + 1, EventType(kind), data, self.clock(), nonce, state.head)
            if self._put(event):
                self.refresh()
                packable = all(b"\n" not in body for body in self._unpacked)  # a malformed slot is never packed
                if event.seq % PACK_EVERY == 0 and len(self._unpacked) == PACK_EVERY and packable:
                    self.store.put_if_absent(pack_key(event.seq), b"\n".join(self._unpacked))
                if self.on_append is not None:
                    self.on_append(event)
                return event
        raise LedgerError(f"{self.store.uri}: could not append after {ATTEMPTS} attempts (heavy contention?)")

    def _load_packs(self) -> None:
        """Fold the stored packs that chain on from the state, each checked against the log's event at its end."""
        for key in self.store.keys(PACKS):
            events = self._pack(key)
            if events is None or events[0].seq != self.state.events + 1:
                return
            for event in events:
                apply(self.state, event)
            self._folded += events

    def _pack(self, key: str) -> list[Event] | None:
        """The events of a pack, if they chain on from the state and end on the event the log holds there."""
        body = self.store.get(key, MAX_PACK_BYTES)
        if body is None or len(body) > MAX_PACK_BYTES:
            return None
        try:
            events = [self._parse(key, line) for line in (body or b"").split(b"\n") if line]
        except LedgerError:
            return None
        head, seq = self.state.head, self.state.events
        for event in events:
            if event.prev != head or event.seq != seq + 1:
                return None
            head, seq = event.digest, event.seq
        last = self.store.get(event_key(seq)) if events else None
        return events if last is not None and hashlib.sha256(last).hexdigest() == head else None

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
        """The event at `seq`: as folded, or read from the store."""
        return self._folded[seq - 1] if 0 < seq <= len(self._folded) else self._read(event_key(seq))

    def _read(self, key: str) -> Event:
        body = self.store.get(key, MAX_EVENT_BYTES)
        if body is None:
            raise LedgerError(f"{self.store.uri}/{key}: listed but cannot be read")
        if len(body) > MAX_EVENT_BYTES:
            raise LedgerError(f"{self.store.uri}/{key}: not a ledger event (larger than {MAX_EVENT_BYTES} bytes)")
        return self._parse(key, body)

    def _parse(self, key: str, body: bytes) -> Event:
        try:
            event = Event(**json.loads(body))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
            raise LedgerError(f"{self.store.uri}/{key}: not a ledger event ({exc})") from None
        shapes = ((event.seq, int), (event.prev, str), (event.type, str), (event.data, dict), (event.at, int | float))
        if not all(isinstance(value, shape) for value, shape in shapes) or isinstance(event.seq, bool):
            raise LedgerError(f"{self.store.uri}/{key}: not a ledger event (a field of the wrong type)")
        if event.type not in WRITTEN:
            raise LedgerError(f"{self.store.uri}/{key}: unknown event type {event.type!r}")
        object.__setattr__(event, "type", EventType(event.type))
        return event

    def verify(self) -> list[str]:
        """Problems: a tampered, missing or reordered event, a pack that differs from the log, an ignored event."""
        problems = []
        checker = Ledger(self.store)
        for number, key in enumerate(self.store.keys(EVENTS), 1):
            if key != event_key(number):
                problems.append(f"{self.store.uri}/{key}: event {number} missing before it, or not an event's name")
                break
            body = self.store.get(key, MAX_EVENT_BYTES) or b""
            event = checker._slot(number, body)
            if event.prev != checker.state.head or event.seq != number:
                problems.append(f"{self.store.uri}/{key}: does not chain to the event before (tampered or reordered)")
            apply(checker.state, event)
        for key in self.store.keys(PACKS):
            name = key.removeprefix(PACKS).removesuffix(".json")
            if not name.isdigit() or int(name) % PACK_EVERY:
                problems.append(f"{self.store.uri}/{key}: not a pack of the ledger (ignored)")
                continue
            seq = int(name)
            body = self.store.get(key) or b""
            expected = b"\n".join(self.store.get(event_key(n)) or b"" for n in range(seq - PACK_EVERY + 1, seq + 1))
            if body != expected:
                problems.append(f"{self.store.uri}/{key}: differs from the events it packs")
        problems += [
            f"{self.store.uri}/{event_key(seq)}: ignored by every reader: {why}"
            for seq, why in checker.state.ignored.items()
        ]
        return problems
