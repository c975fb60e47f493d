"""Webhook notifications of release decisions: Slack-compatible JSON, the body signed with HMAC-SHA256.

Each ledger event whose type is in `notify.events` is POSTed to
`notify.webhook_url` as `{"text": <one line for people>, "event": <the event>}`.
With `notify.secret` set, `X-Shipyard-Signature: sha256=<hex>` signs
`<X-Shipyard-Timestamp>.<body>`, so a receiver can check origin and freshness
(`verify`). A notification that fails is logged and dropped: the ledger is the
record, the webhook only a courtesy. Called wherever the pipeline, the flows and
the CLI append decisions.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import asdict

import httpx

from shipyard.registry.ledger import Event
from shipyard.settings import NotifySettings

log = logging.getLogger(__name__)
SIGNATURE = "X-Shipyard-Signature"
TIMESTAMP = "X-Shipyard-Timestamp"


def text(event: Event) -> str:
    """One line a person reads in a chat channel."""
    d = event.data
    release = f"{d.get('line', '')} v{d.get('version', d.get('to_version', ''))}"
    lines = {
        "released": f"Candidate published: {release}",
        "gate_failed": f"Gate failed for step {d.get('step')}: {d.get('reason', '')}",
        "failed": f"Release run failed for step {d.get('step')}: {d.get('reason', '')}",
        "approved": f"{release} approved by {d.get('by')}" + (f": {d['note']}" if d.get("note") else ""),
        "rejected": f"{release} rejected by {d.get('by')}: {d.get('note', '')}",
        "promoted": f"{release} promoted to {d.get('channel')}",
        "rolled_back": f"{d.get('line')} {d.get('channel')} rolled back to v{d.get('version')}",
    }
    return lines.get(event.type, f"{event.type}: {json.dumps(d, sort_keys=True)}")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, max_age: float = 300.0) -> bool:
    """What a receiver checks: the signature matches and the timestamp is recent."""
    fresh = abs(time.time() - float(timestamp)) <= max_age
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


def announce(settings: NotifySettings, events: Iterable[Event | None]) -> int:
    """POST each event of a configured type; how many were delivered."""
    if settings.webhook_url is None:
        return 0
    url = settings.webhook_url.get_secret_value()
    delivered = 0
    for event in events:
        if event is None or event.type not in settings.events:
            continue
        payload = {"text": text(event), "event": asdict(event) | {"digest": event.digest}}
        body = json.dumps(payload, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", TIMESTAMP: str(int(time.time()))}
        if settings.secret:
            headers[SIGNATURE] = sign(settings.secret.get_secret_value(), headers[TIMESTAMP], body)
        try:
            response = httpx.post(url, content=body, headers=headers, timeout=settings.timeout_seconds)
            response.raise_for_status()
            delivered += 1
        except httpx.HTTPStatusError as exc:
            log.warning(
                "notification of ledger event %d to %s failed: HTTP %d",
                event.seq,
                redact(url),
                exc.response.status_code,
            )
        except httpx.HTTPError as exc:
            log.warning("notification of ledger event %d to %s failed: %s", event.seq, redact(url), type(exc).__name__)
    return delivered


def redact(url: str) -> str:
    """A webhook URL as it may appear in a log: scheme and host only (the path and query carry tokens)."""
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}/…"
