"""The release ledger on a local store: chained appends, folds, exactly one release under races, tampering."""

import json
import multiprocessing
import threading
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from shipyard.errors import StoreError
from shipyard.registry import ledger as ledger_module
from shipyard.registry.ledger import Ledger, event_key
from shipyard.registry.state import State
from shipyard.registry.stores import LocalStore, S3Store

from .s3_proxy import LosingProxy


class RawBody:
    """The raw body of a canned botocore response."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body

    def read(self, *_: Any) -> bytes:
        return self.body


def release(line: str, candidate: str) -> Any:
    """Build a `released` event for `candidate`, unless the line already has it (exactly once)."""

    def build(state: State) -> tuple[str, dict[str, Any]] | None:
        if state.release_of(line, candidate) is not None:
            return None
        return "released", {"line": line, "version": state.latest(line) + 1, "candidate_digest": candidate}

    return build


def test_releases_get_gap_free_versions_and_the_chain_verifies(tmp_path: Path) -> None:
    ledger = Ledger(LocalStore(tmp_path))
    for candidate in ("a", "b", "c"):
        ledger.append(release("main", candidate))
    assert ledger.append(release("main", "b")) is None  # publishing again is a no-op
    state = Ledger(LocalStore(tmp_path)).refresh()  # a fresh reader folds the same state
    assert sorted(state.releases) == [("main", 1), ("main", 2), ("main", 3)]
    assert state.channel("main", "candidate") == 3
    assert Ledger(LocalStore(tmp_path)).verify() == []


def test_promotion_and_rollback_move_the_channel_and_keep_history(tmp_path: Path) -> None:
    ledger = Ledger(LocalStore(tmp_path))
    for candidate in ("a", "b"):
        ledger.append(release("main", candidate))
    ledger.append(lambda s: ("promoted", {"line": "main", "channel": "stable", "version": 1}))
    ledger.append(lambda s: ("promoted", {"line": "main", "channel": "stable", "version": 2}))
    ledger.append(lambda s: ("rolled_back", {"line": "main", "channel": "stable", "version": 1, "from_version": 2}))
    assert ledger.state.channel("main", "stable") == 1
    assert ledger.state.channels[("main", "stable")] == [1, 2, 1]


def test_racing_publishers_make_one_release(tmp_path: Path) -> None:
    barrier = threading.Barrier(8)

    def publish() -> None:
        ledger = Ledger(LocalStore(tmp_path))
        barrier.wait()
        ledger.append(release("main", "same-candidate"))

    threads = [threading.Thread(target=publish) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = Ledger(LocalStore(tmp_path)).refresh()
    assert list(state.releases) == [("main", 1)]


def _append_many(root: str, worker: int) -> None:
    ledger = Ledger(LocalStore(Path(root)))
    for i in range(20):
        ledger.append(release("main", f"{worker}-{i}"))


def test_processes_appending_at_once_lose_nothing_and_never_share_a_version(tmp_path: Path) -> None:
    processes = [multiprocessing.Process(target=_append_many, args=(str(tmp_path), w)) for w in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
        assert p.exitcode == 0
    ledger = Ledger(LocalStore(tmp_path))
    state = ledger.refresh()
    assert sorted(v for _, v in state.releases) == list(range(1, 81))
    assert len({r.candidate_digest for r in state.releases.values()}) == 80
    assert ledger.verify() == []


class LostAck(LocalStore):
    """A store whose first conditional write succeeds but whose answer is lost."""

    lost = False

    def put_if_absent(self, key: str, body: bytes) -> bool:
        wrote = super().put_if_absent(key, body)
        if not self.lost:
            self.lost = True
            raise StoreError("connection reset after the write")
        return wrote


def test_a_lost_acknowledgement_is_not_a_second_release(tmp_path: Path) -> None:
    ledger = Ledger(LostAck(tmp_path))
    event = ledger.append(release("main", "a"))
    assert event is not None and event.seq == 1
    assert list(Ledger(LocalStore(tmp_path)).refresh().releases) == [("main", 1)]


def test_a_tampered_or_missing_event_is_reported(tmp_path: Path) -> None:
    ledger = Ledger(LocalStore(tmp_path))
    for candidate in ("a", "b", "c"):
        ledger.append(release("main", candidate))
    path = tmp_path / event_key(2)
    event = json.loads(path.read_text())
    event["data"]["candidate_digest"] = "evil"
    path.write_text(json.dumps(event))
    problems = Ledger(LocalStore(tmp_path)).verify()
    assert len(problems) == 1 and event_key(3) in problems[0] and "does not chain" in problems[0]
    (tmp_path / event_key(1)).unlink()
    assert any("event 1 missing" in p for p in Ledger(LocalStore(tmp_path)).verify())


@pytest.mark.s3
def test_the_ledger_on_s3_gives_one_release_to_racing_publishers(s3_endpoint: str) -> None:
    bucket = f"releases-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    uri = f"s3://{bucket}/models"
    barrier = threading.Barrier(4)

    def publish(candidate: str) -> None:
        ledger = Ledger(S3Store(uri, s3_endpoint))
        barrier.wait()
        ledger.append(release("main", candidate))

    threads = [threading.Thread(target=publish, args=(c,)) for c in ("x", "x", "y", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ledger = Ledger(S3Store(uri, s3_endpoint))
    state = ledger.refresh()
    assert sorted(r.candidate_digest for r in state.releases.values()) == ["x", "y"]
    assert sorted(v for _, v in state.releases) == [1, 2]
    assert ledger.verify() == []


@pytest.mark.s3
def test_s3_faults_lose_nothing_and_never_duplicate_a_version(s3_endpoint: str) -> None:
    bucket = f"releases-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    proxy = LosingProxy(int(s3_endpoint.rsplit(":", 1)[1]))
    store = S3Store(f"s3://{bucket}/models", proxy.url)
    throttled: list[str] = []

    def slow_down(request: Any, **_: Any) -> Any:  # a 503 SlowDown before the server sees the first write
        if request.method == "PUT" and not throttled:
            throttled.append(request.url)
            return AWSResponse(request.url, 503, {}, RawBody(b"<Error><Code>SlowDown</Code></Error>"))
        return None

    store.client.meta.events.register("before-send.s3.PutObject", slow_down)
    ledger = Ledger(store)
    ledger.append(release("main", "a"))  # retried by botocore after the 503
    proxy.lose_answer_to = b"PUT /" + bucket.encode() + b"/models/ledger/events/000000000002.json"
    ledger.append(release("main", "b"))  # committed, answer lost: the retry gets 412, the nonce says it won
    ledger.append(release("main", "c"))
    proxy.close()
    state = Ledger(S3Store(f"s3://{bucket}/models", s3_endpoint)).refresh()
    assert throttled and proxy.lost == 1
    assert sorted((r.version, r.candidate_digest) for r in state.releases.values()) == [(1, "a"), (2, "b"), (3, "c")]


def test_a_new_reader_re_folds_the_stored_packs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_module, "PACK_EVERY", 2)
    ledger = Ledger(LocalStore(tmp_path))
    for candidate in "abcde":
        ledger.append(release("main", candidate))
    assert sorted(p.name for p in (tmp_path / "ledger" / "packs").iterdir()) == [
        "000000000002.json",
        "000000000004.json",
    ]
    assert Ledger(LocalStore(tmp_path)).verify() == []
    pack = tmp_path / "ledger" / "packs" / "000000000002.json"
    original = pack.read_text()
    pack.write_text(original.replace('"a"', '"evil"'))
    [problem] = Ledger(LocalStore(tmp_path)).verify()
    assert "000000000002.json: differs from the events it packs" in problem
    assert Ledger(LocalStore(tmp_path)).refresh().release_of("main", "evil") is None  # nor does a reader trust it
    pack.write_text(original)
    for seq in (1, 3):  # a reader re-folds the packs; only the event at each pack's end is read to check it
        (tmp_path / event_key(seq)).unlink()
    state = Ledger(LocalStore(tmp_path)).refresh()
    assert sorted(v for _, v in state.releases) == [1, 2, 3, 4, 5] and state.events == 5


def test_a_fate_recorded_again_appends_nothing_and_notifies_no_one(tmp_path: Path) -> None:
    """A release run retried (or re-run) after it recorded a gate failure comes to the same fate: one event."""
    from shipyard.checkpoints import Checkpoint
    from shipyard.events import EventType
    from shipyard.registry.releases import Registry
    from shipyard.settings import Settings

    store = LocalStore(tmp_path / "store")
    registry = Registry.of(store, Settings(home=tmp_path / "home"))
    taken = Checkpoint("file:///run", "run", 20, "transformers", "file:///run/checkpoint-20", "complete", digest="d20")
    first = registry.record_fate(EventType.GATE_FAILED, taken, "floor: arith")
    again = registry.record_fate(EventType.GATE_FAILED, taken, "floor: arith")
    assert [e.type for e in first] == ["gate_failed"] and again == []
    other = registry.record_fate(EventType.GATE_FAILED, taken, "safety: harmful refusal")  # another reason: kept
    assert [e.type for e in other] == ["gate_failed"]
    assert Ledger(store).refresh().events == 2
