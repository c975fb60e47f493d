"""The evidence an approver reads before deciding: the release's gate checks and its scores against the champion.

Built from the release manifest alone (gate decision, eval scores, lineage),
so it reads the same from the Prefect form, the CLI and the dashboard.
"""

from __future__ import annotations

from typing import Any

from shipyard.registry.ledger import Ledger
from shipyard.registry.publish import diff, gate_of, manifest, resolve
from shipyard.registry.state import State
from shipyard.registry.stores import Store


def evidence(store: Store, line: str, version: int, champion_channel: str = "stable") -> str:
    """Markdown: what the release is, every gate check, and each score with its change against the champion."""
    state = Ledger(store).refresh()
    release = resolve(state, line, str(version))
    body = manifest(store, release)
    lineage = body.get("lineage") or {}
    gate = body.get("gate") or {}
    champion = state.channel(line, champion_channel)
    checkpoint = str(release.data.get("checkpoint_digest") or lineage.get("checkpoint_digest") or "")
    where = lineage.get("checkpoint_uri") or "not recorded (published by hand)"
    screen: dict[str, Any] = lineage["screen"] if isinstance(lineage.get("screen"), dict) else {}
    lines = [
        f"## {cell(line)} v{version}: approve for {cell(champion_channel)}?",
        "",
        f"- RL run: {cell(lineage.get('run', 'not recorded'))}, step {cell(lineage.get('step', 'not recorded'))}",
        f"- checkpoint: {cell(where)}" + (f" (digest `{checkpoint[:16]}`)" if checkpoint else ""),
        f"- candidate digest: `{release.candidate_digest[:16]}`",
        f"- champion: {f'v{champion}' if champion else 'none yet'} ({champion_channel})",
        f"- gate: {verdict(state, body)}",
        *([f"- screening: {cell(screen.get('reason', ''))}"] if screen else []),
        *([_stream(gate["stream"])] if isinstance(gate.get("stream"), dict) else []),
        "",
        "| check | verdict | statistic | threshold | 95% interval | p-value | detail |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [_check_row(check) for check in gate.get("checks", [])]
    screened = screen.get("mde") is not None
    if (sizes := gate.get("sizes")) or screened:
        lines += [
            "",
            "| task | items | smallest drop detectable | items needed | enough |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [_size_row(size) for size in sizes or []]
        if screened:  # the screen's size beside the gate's: what a raw checkpoint's screen can tell apart
            mde = screen.get("mde")
            shown = f"{mde:.3f}" if isinstance(mde, float) else "—"
            task, items = cell(screen.get("task")), cell(screen.get("items"))
            lines.append(f"| screening: {task} (raw checkpoint) | {items} | {shown} | — | — |")
    categories = gate.get("categories")
    if isinstance(categories, list) and categories:
        lines += [
            "",
            "| harm category | harmful requests | refusal | harmful compliance | over-refusal | smallest rise"
            " detectable | enough |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [_category_row(c) for c in categories if isinstance(c, dict)]
    deltas = diff(store, line, str(champion), str(version))["score_deltas"] if champion else {}
    lines += ["", f"| task | metric | v{version} | change vs champion |", "| --- | --- | --- | --- |"]
    for task, metrics in sorted((body.get("evals") or {}).items()):
        for metric, value in sorted(metrics.items()):
            if metric.endswith("_stderr"):
                continue
            change = deltas.get(task, {}).get(metric)
            shown = f"{change:+.3f}" if change is not None else "—"
            lines.append(f"| {cell(task)} | {cell(metric)} | {float(value):.3f} | {shown} |")
    return "\n".join(lines) + "\n"


def verdict(state: State, body: dict[str, Any]) -> str:
    """The gate verdict as an approver should read it: PASS only when a gate key of the policy signed it."""
    if body.get("ungated") is not None:
        return f"UNGATED (published without a passing gate: {cell(str(body['ungated']))})"
    if (body.get("gate") or {}).get("passed") is not True:
        return "FAIL"
    signer, why = gate_of(state.policy, body)
    if signer is None:
        return f"UNVERIFIED ({cell(why)}; it counts as ungated)"
    return f"PASS (verdict signed by the pipeline's key {signer})"


def _stream(s: dict[str, Any]) -> str:
    """The gate decision's place in the line's stream (e-LOND), for the approver."""
    try:
        numbers = f"e-value {float(s['e_value']):.3g} against 1/{1 / float(s['level']):.3g}"
        left = f"alpha not yet allotted {float(s['budget_left']):.3g}"
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return "- stream: unreadable"
    said = "blocks" if s.get("blocked") is True else "does not block"
    return f"- stream: decision {cell(s.get('t'))} of the line, {numbers}: e-LOND {said}; {left}"


def cell(text: Any) -> str:
    """Text safe inside a markdown table cell: no pipe ends the cell, no newline the row, no tag or link opens."""
    flat = " ".join(str(text).split())
    return "".join(f"\\{c}" if c in "|\\`<>[]" else c for c in flat)


def _check_row(check: dict[str, Any]) -> str:
    interval: Any = check.get("interval")
    p_value = check.get("p_value")
    bounds = isinstance(interval, list | tuple) and len(interval) == 2
    cells = (
        cell(check.get("name", "?")),
        "pass" if check.get("passed") is True else "**FAIL**",
        _number(check.get("statistic")),
        cell(check.get("threshold", "")) or "—",
        f"[{_number(interval[0])}, {_number(interval[1])}]" if bounds else "—",
        f"{p_value:.3g}" if isinstance(p_value, int | float) and not isinstance(p_value, bool) else "—",
        cell(check.get("detail", "")),
    )
    return "| " + " | ".join(cells) + " |"


def _size_row(size: dict[str, Any]) -> str:
    enough = "yes" if size.get("sufficient") else "**no**"
    cells = (cell(size.get("task", "?")), cell(size.get("items", "?")), _number(size.get("detectable_effect")))
    return f"| {' | '.join(cells)} | {cell(size.get('items_needed', '?'))} | {enough} |"


def _category_row(c: dict[str, Any]) -> str:
    name = cell(c.get("category", "?")) + (" (gated)" if c.get("gated") is True else "")
    cells = (
        name,
        cell(c.get("items", "?")),
        _number(c.get("refusal")),
        _number(c.get("harmful")),
        _number(c.get("over_refusal")),
        _number(c.get("detectable_effect")),
        "yes" if c.get("sufficient") is True else "**no: too coarse to gate on**",
    )
    return "| " + " | ".join(cells) + " |"


def _number(value: Any) -> str:
    return f"{value:+.3f}" if isinstance(value, int | float) and not isinstance(value, bool) else "—"
