"""Webhook notifications: Slack-compatible JSON, HMAC-signed, sent for release decisions, never fatal."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from shipyard.registry.approvals import approve
from shipyard.registry.notify import SIGNATURE, TIMESTAMP, announce, verify
from shipyard.registry.publish import publish
from shipyard.registry.stores import LocalStore
from shipyard.settings import NotifySettings

from .helpers import Keys, gated, protect

SECRET = "s3cret"


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook endpoint on 127.0.0.1 that records what it receives."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"body": body, "headers": dict(self.headers)})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


def test_decisions_are_posted_signed(tiny_model_dir: Path, tmp_path: Path, receiver: Any) -> None:
    url, received = receiver
    settings = NotifySettings(webhook_url=url, secret=SECRET)
    store = LocalStore(tmp_path / "store")
    keys = Keys(tmp_path / "keys")
    protect(store, keys, approvers=("ana",))
    released = publish(gated(tmp_path / "m", tiny_model_dir), "main", store)
    events = [released.event, *approve(store, "main", 1, keys.signer("ana"), "stable", "ship it")]
    assert announce(settings, events) == 3
    texts = [json.loads(r["body"])["text"] for r in received]
    assert texts == ["Candidate published: main v1", "main v1 approved by ana: ship it", "main v1 promoted to stable"]
    for r in received:
        headers = {k.lower(): v for k, v in r["headers"].items()}
        assert verify(SECRET, headers[TIMESTAMP.lower()], r["body"], headers[SIGNATURE.lower()])
        assert not verify("wrong", headers[TIMESTAMP.lower()], r["body"], headers[SIGNATURE.lower()])
        assert not verify(SECRET, headers[TIMESTAMP.lower()], r["body"] + b" ", headers[SIGNATURE.lower()])
    assert json.loads(received[1]["body"])["event"]["data"]["by"] == "ana"


def test_a_dead_webhook_is_logged_not_fatal(tiny_model_dir: Path, tmp_path: Path, caplog: Any) -> None:
    store = LocalStore(tmp_path / "store")
    released = publish(gated(tmp_path / "m", tiny_model_dir), "main", store)
    dead = NotifySettings(webhook_url="http://127.0.0.1:9/hook?token=s3cr3t", timeout_seconds=1)
    assert announce(dead, [released.event]) == 0
    assert "notification of ledger event 1 to http://127.0.0.1/… failed: ConnectError" in caplog.text
    assert "s3cr3t" not in caplog.text and "/hook" not in caplog.text
    assert announce(NotifySettings(), [released.event]) == 0  # no webhook configured: nothing sent


def test_the_registry_returns_what_each_write_appended_and_announces_each_event_once(
    tiny_model_dir: Path, tmp_path: Path, receiver: Any
) -> None:
    from shipyard.registry.approval_policy import ChannelRule
    from shipyard.registry.ledger import Ledger
    from shipyard.registry.releases import Registry

    url, received = receiver
    store = LocalStore(tmp_path / "store")
    keys = Keys(tmp_path / "keys")
    protect(store, keys, channels={"stable": ChannelRule(required=2)})
    registry = Registry(store, "main", NotifySettings(webhook_url=url, events=["released", "approved", "promoted"]))
    candidate = gated(tmp_path / "m1", tiny_model_dir)
    assert registry.publish(candidate).created and registry.publish(candidate).event is None
    assert [e.type for e in registry.approve("v1", keys.signer("ana"), "stable")] == ["approved"]
    assert registry.approve("1", keys.signer("ana"), "stable") == []  # idempotent: nothing written, nothing sent
    assert [e.type for e in registry.approve("candidate", keys.signer("bo"), "stable")] == ["approved", "promoted"]
    assert [e.type for e in registry.promote("stable", "beta")] == ["promoted"]
    assert registry.promote("v1", "beta") == []
    assert registry.heads() == {"beta": 1, "candidate": 1, "stable": 1}
    assert registry.pending("stable") == []
    texts = [json.loads(r["body"])["text"] for r in received]
    assert texts == [
        "Candidate published: main v1",
        "main v1 approved by ana",
        "main v1 approved by bo",
        "main v1 promoted to stable",
        "main v1 promoted to beta",
    ]
    seqs = [json.loads(r["body"])["event"]["seq"] for r in received]
    assert len(seqs) == len(set(seqs))  # each event once
    page = registry.events(after=2, limit=2)
    assert [e.seq for e in page] == [3, 4] and page == [Ledger(store).event(3), Ledger(store).event(4)]
