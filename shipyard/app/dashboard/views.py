"""What each dashboard page shows, computed from the ledger and release manifests (pure reads, no rendering)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import humanize

from shipyard.errors import LedgerError
from shipyard.evals.screening import budget
from shipyard.events import EventType
from shipyard.registry import moves
from shipyard.registry.evidence import verdict
from shipyard.registry.ledger import Event
from shipyard.registry.publish import manifest
from shipyard.registry.releases import Registry
from shipyard.registry.state import State
from shipyard.registry.stores import Store
from shipyard.registry.trust import check_anchors
from shipyard.settings import Settings

SAFETY_METRICS = ("refusal",)
FATES = {
    EventType.SKIPPED: "skipped",
    EventType.REFUSED: "refused",
    EventType.GATE_FAILED: "failed the gate",
    EventType.FAILED: "its release run failed",
    EventType.RELEASED: "released",
}


def read(registry: Registry, settings: Settings) -> tuple[State, list[Event]]:
    """The state and every event, from a store whose anchors hold. The registry lives as long as the
    dashboard: each page reads only the events written since the last (one GET when there are none)."""
    state, events = registry.snapshot()
    check_anchors(registry.store, settings, state, events)
    return state, events


def age(at: float, now: float | None = None) -> str:
    return str(humanize.naturaldelta(max(0.0, (now or time.time()) - at)))


def channels(state: State, events: list[Event], line: str) -> list[dict[str, Any]]:
    """Each channel of the line: its head now, since when, who approved it, and its history (newest first)."""
    rows = []
    for (name, channel), history in sorted(state.channels.items()):
        if name != line or not history:
            continue
        moved = [
            e
            for e in events
            if e.type in (EventType.PROMOTED, EventType.ROLLED_BACK) and e.data.get("channel") == channel
        ]
        since = moved[-1].at if moved else state.releases[(line, history[-1])].at
        approvers = sorted(w for w, word in state.words(line, history[-1]).items() if word == "approved")
        rows.append(
            {
                "channel": channel,
                "version": history[-1],
                "since": age(since),
                "approved_by": approvers,
                "history": list(reversed(history)),
            }
        )
    return rows


def releases(store: Store, state: State, line: str, approval_channel: str) -> list[dict[str, Any]]:
    """Every release of the line, newest first, with its step, gate verdict, approvals and whether it is pending."""
    rows = []
    for (name, version), release in sorted(state.releases.items(), reverse=True):
        if name != line:
            continue
        try:
            said = verdict(state, manifest(store, release))
        except LedgerError:  # a missing or altered manifest: shown as such, never a crash
            said = "UNREADABLE"
        gate, _, why = said.partition(" ")
        words = state.words(line, version)
        pending = is_pending(state, line, version, approval_channel)
        rows.append(
            {
                "version": version,
                "step": release.data.get("step"),
                "gate": gate.lower(),
                "gate_why": why.strip("()").replace("verdict signed", "signed"),
                "approvals": [f"{who} {word}" for who, word in sorted(words.items())],
                "age": age(release.at),
                "heads": [c for (n, c), h in sorted(state.channels.items()) if n == line and h and h[-1] == version],
                "pending": pending,
                "waiting": _waiting(state, line, approval_channel, version, gate.lower()) if pending else "",
            }
        )
    return rows


def _waiting(state: State, line: str, channel: str, version: int, gate: str) -> str:
    """What the release needs to reach `channel`; "never" when the policy keeps it off whatever approvals come."""
    rule = state.policy.channels.get(channel) if state.policy else None
    if rule is not None and gate != "pass" and not rule.allow_ungated:
        return f"never: {gate}, and the policy keeps ungated releases off {channel}"
    return moves.waiting(state, line, channel, version)


def is_pending(state: State, line: str, version: int, channel: str) -> bool:
    """Never on `channel` and not rejected: what approvers have before them."""
    return (
        version not in state.channels.get((line, channel), []) and "rejected" not in state.words(line, version).values()
    )


def channel_history(state: State, events: list[Event], line: str) -> list[dict[str, Any]]:
    """Every move of the line's channels that counted, newest first: to and from which version, when, by whom,
    with what note."""
    heads: dict[str, int] = {}
    rows = []
    for e in events:
        moved = e.type in (EventType.PROMOTED, EventType.ROLLED_BACK) and e.data.get("line") == line
        if not moved or e.seq in state.ignored:  # only moves that counted (their fields were checked as folded)
            continue
        channel, version = str(e.data["channel"]), int(e.data["version"])
        by = e.data.get("approved_by") or e.data.get("by") or "—"
        note = str(e.data.get("note", ""))
        if not note and isinstance(by, list):  # moved by approvals: their notes say why
            said = [a for a in state.approvals.get((line, version), []) if a.get("by") in by and a.get("note")]
            note = "; ".join(f"{a['by']}: {a['note']}" for a in said)
        rows.append(
            {
                "channel": channel,
                "kind": "rolled back" if e.type == EventType.ROLLED_BACK else "promoted",
                "version": version,
                "from": heads.get(channel),
                "when": age(e.at),
                "by": ", ".join(by) if isinstance(by, list) else str(by),
                "note": note,
            }
        )
        heads[channel] = version
    return list(reversed(rows))


def stream(events: list[Event], line: str) -> list[dict[str, Any]]:
    """The checkpoint stream: each checkpoint's fate with its reason, by step."""
    rows = [
        {
            "step": e.data.get("step"),
            "fate": FATES[e.type] + (f" as v{e.data['version']}" if e.type == EventType.RELEASED else ""),
            "reason": e.data.get("reason", ""),
            "checkpoint": e.data.get("checkpoint_uri", ""),
            "age": age(e.at),
        }
        for e in events
        if e.type in FATES and e.data.get("line") == line
    ]
    return sorted(rows, key=lambda r: (r["step"] is None, r["step"] or 0))


def screening(events: list[Event], line: str) -> str:
    """What screening cost and saved on the line: checkpoints screened, turned away (the screen-out rate), seconds."""
    return budget(e.data.get("screen") for e in events if e.data.get("line") == line).said()


def scores_by_suite(store: Store, state: State, line: str) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Each eval score of the released models against the RL step they came from, by suite (as the gate ran
    them; a release whose gate report names no suites puts refusal rates under "safety", the rest under "evals")."""
    suites: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for (name, _), release in sorted(state.releases.items()):
        step = release.data.get("step")
        if name != line or step is None:
            continue
        try:
            body = manifest(store, release)
            ran = (body.get("gate") or {}).get("suites") or {}
            suite_of = {str(task): str(suite) for suite, tasks in ran.items() for task in tasks}
            for task, metrics in (body.get("evals") or {}).items():
                for metric, value in metrics.items():
                    if metric.endswith("_stderr"):
                        continue
                    suite = suite_of.get(task) or ("safety" if metric in SAFETY_METRICS else "evals")
                    suites.setdefault(suite, {}).setdefault(f"{task} {metric}", []).append((float(step), float(value)))
        except (LedgerError, AttributeError, TypeError, ValueError):
            continue  # an unreadable or malformed manifest: `verify` names it; the page shows the rest
    return suites


def rl_by_step(events: list[Event], line: str, names: tuple[str, ...]) -> dict[str, list[tuple[float, float]]]:
    """The RL run's own signals (trainer metrics such as reward) at each checkpoint the pipeline decided."""
    seen: dict[str, dict[float, float]] = {}
    for e in events:
        step, metrics = e.data.get("step"), e.data.get("metrics") or {}
        if e.type in FATES and e.data.get("line") == line and step is not None and isinstance(metrics, dict):
            for name in (n for n in names if n in metrics):
                with contextlib.suppress(TypeError, ValueError):  # a forged event's odd values are not plotted
                    point = float(step), float(metrics[name])
                    seen.setdefault(name, {})[point[0]] = point[1]
    return {name: sorted(points.items()) for name, points in seen.items()}
