"""The evidence an approver reads before deciding: the release's gate checks and its scores against the champion.

Built from the release manifest alone (gate decision, eval scores, lineage),
so it reads the same from the Prefect form, the CLI and the dashboard.
"""

from __future__ import annotations

from typing import Any

from shipyard.ledger import Ledger
from shipyard.publish import diff, manifest, resolve
from shipyard.stores import Store


def evidence(store: Store, line: str, version: int, champion_channel: str = "stable") -> str:
    """Markdown: what the release is, every gate check, and each score with its change against the champion."""
    state = Ledger(store).refresh()
    release = resolve(state, line, str(version))
    body = manifest(store, release)
    lineage = body.get("lineage") or {}
    gate = body.get("gate") or {}
    champion = state.channel(line, champion_channel)
    lines = [
        f"## {line} v{version}: approve for {champion_channel}?",
        "",
        f"- checkpoint: `{lineage.get('checkpoint', '?')}` (digest `{release.data.get('checkpoint_digest', '')[:16]}`)",
        f"- candidate digest: `{release.candidate_digest[:16]}`",
        f"- champion: {f'v{champion}' if champion else 'none yet'} ({champion_channel})",
        f"- gate: {'PASS' if gate.get('passed') else 'FAIL'}",
        "",
        "| check | verdict | detail |",
        "| --- | --- | --- |",
    ]
    lines += [_check_row(check) for check in gate.get("checks", [])]
    deltas = diff(store, line, str(champion), str(version))["score_deltas"] if champion else {}
    lines += ["", f"| task | metric | v{version} | change vs champion |", "| --- | --- | --- | --- |"]
    for task, metrics in sorted((body.get("evals") or {}).items()):
        for metric, value in sorted(metrics.items()):
            if metric.endswith("_stderr"):
                continue
            change = deltas.get(task, {}).get(metric)
            lines.append(f"| {task} | {metric} | {value:.3f} | {f'{change:+.3f}' if change is not None else '—'} |")
    return "\n".join(lines) + "\n"


def _check_row(check: dict[str, Any]) -> str:
    return f"| {check['name']} | {'pass' if check['passed'] else '**FAIL**'} | {check.get('detail', '')} |"
