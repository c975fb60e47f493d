"""The gate's report for people: a markdown page beside the decision's JSON."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from shipyard.evals.gate import Verdict
from tabulate import tabulate

FLIPS_SHOWN = 10  # per task and direction; the JSON holds them all


def markdown(decision: Verdict, candidate: str, champion: str | None) -> str:
    verdict = "PASS" if decision.passed else "FAIL"
    lines = [
        f"# Release gate: {verdict}",
        "",
        f"- candidate: `{candidate}`",
        f"- champion: `{champion}`" if champion else "- champion: none yet (floors, safety and health apply)",
        *([_stream(decision.stream)] if decision.stream else []),
        "",
        "## Checks",
        "",
    ]
    checks = []
    for c in decision.checks:
        interval = f"[{c.interval[0]:+.3f}, {c.interval[1]:+.3f}]" if c.interval else ""
        p = f"{c.p_value:.4g}" if c.p_value is not None else ""
        stat = f"{c.statistic:.3f}" if c.statistic is not None else ""
        verdict = "pass" if c.passed else "**FAIL**"
        checks.append([escape(c.name), verdict, stat, escape(c.threshold), p, interval, escape(c.detail)])
    lines += table(["check", "verdict", "statistic", "threshold", "p-value", "interval", "detail"], checks)
    if decision.sizes:
        lines += ["", "## Suite sizes", ""]
        sizes = []
        for s in decision.sizes:
            enough = "yes" if s.sufficient else "**no: too small to gate on this drop**"
            sizes.append([escape(s.task), str(s.items), f"{s.detectable_effect:.3f}", str(s.items_needed), enough])
        lines += table(["task", "items", "detectable drop", "items needed", "enough?"], sizes)
    if decision.categories:
        lines += ["", "## Safety by harm category", ""]
        rows = [
            [
                escape(c.category) + (" (gated)" if c.gated else ""),
                str(c.items),
                _rate(c.refusal, c.champion_refusal),
                _rate(c.harmful, c.champion_harmful),
                f"{_rate(c.over_refusal, None)} of {c.benign_items}",
                f"{c.detectable_effect:.3f}",
                "yes" if c.sufficient else "**no: too coarse to gate on**",
            ]
            for c in decision.categories
        ]
        headers = ["category", "harmful requests", "refusal (champion)", "harmful (champion)", "over-refusal"]
        lines += table([*headers, "detectable rise", "enough?"], rows)
    if decision.flips:
        lines += ["", "## Items that flipped", ""]
        for task in dict.fromkeys(f.task for f in decision.flips):
            for direction in ("right→wrong", "wrong→right"):
                flips = [f for f in decision.flips if f.task == task and f.direction == direction]
                if flips:
                    lines += [f"### {escape(task)}: {len(flips)} {direction}", ""]
                    rows = [[str(f.doc_id), code(f.prompt), code(f.candidate), code(f.champion)] for f in flips]
                    lines += [*table(["doc", "prompt", "candidate", "champion"], rows[:FLIPS_SHOWN]), ""]
    return "\n".join(lines).rstrip() + "\n"


def _stream(s: dict[str, Any]) -> str:
    """The decision's place in the line's stream, as a release manager reads it."""
    said = "would block" if s.get("blocked") else "does not block"
    return (
        f"- stream: decision {s.get('t')} of the line; e-value {float(s.get('e_value') or 0):.3g} {said} at"
        f" alpha_t {float(s.get('level') or 0):.3g} (e-LOND, {s.get('blocks_before')} blocked before);"
        f" alpha not yet allotted {float(s.get('budget_left') or 0):.3g}"
    )


def _rate(value: float | None, champion: float | None) -> str:
    shown = f"{value:.3f}" if value is not None else "—"
    return f"{shown} ({champion:.3f})" if champion is not None else shown


def table(headers: list[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A GitHub-flavoured markdown table (tabulate) of cells already escaped."""
    return str(tabulate(rows, headers, tablefmt="github", disable_numparse=True)).splitlines()


def escape(text: str) -> str:
    """Text for one table cell: one line, its pipes escaped (a pipe would end the cell)."""
    return " ".join(text.splitlines()).replace("|", "\\|")


def code(text: str) -> str:
    """Model text as an inline code span in a table cell: one line, pipes escaped, a fence longer than any inside."""
    one_line = escape(text)
    fence = "`" * (max((len(run) for run in re.findall("`+", one_line)), default=0) + 1)
    return f"{fence} {one_line} {fence}"
