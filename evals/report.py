"""The gate's report for people: a markdown page beside the decision's JSON."""

from __future__ import annotations

from evals.gate import Decision

FLIPS_SHOWN = 10  # per task and direction; the JSON holds them all


def markdown(decision: Decision, candidate: str, champion: str | None) -> str:
    verdict = "PASS" if decision.passed else "FAIL"
    lines = [
        f"# Release gate: {verdict}",
        "",
        f"- candidate: `{candidate}`",
        f"- champion: `{champion}`" if champion else "- champion: none yet (floors, safety and health apply)",
        "",
        "## Checks",
        "",
        "| check | verdict | statistic | threshold | p-value | interval | detail |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in decision.checks:
        interval = f"[{c.interval[0]:+.3f}, {c.interval[1]:+.3f}]" if c.interval else ""
        p = f"{c.p_value:.4g}" if c.p_value is not None else ""
        stat = f"{c.statistic:.3f}" if c.statistic is not None else ""
        verdict = "pass" if c.passed else "**FAIL**"
        lines.append(f"| {c.name} | {verdict} | {stat} | {c.threshold} | {p} | {interval} | {c.detail} |")
    if decision.sizes:
        lines += [
            "",
            "## Suite sizes",
            "",
            "| task | items | detectable drop | items needed | enough? |",
            "| --- | --- | --- | --- | --- |",
        ]
        for s in decision.sizes:
            enough = "yes" if s.sufficient else "**no: too small to gate on this drop**"
            lines.append(f"| {s.task} | {s.items} | {s.detectable_effect:.3f} | {s.items_needed} | {enough} |")
    if decision.flips:
        lines += ["", "## Items that flipped", ""]
        for task in dict.fromkeys(f.task for f in decision.flips):
            for direction in ("right→wrong", "wrong→right"):
                flips = [f for f in decision.flips if f.task == task and f.direction == direction]
                if flips:
                    lines += [
                        f"### {task}: {len(flips)} {direction}",
                        "",
                        "| doc | prompt | candidate | champion |",
                        "| --- | --- | --- | --- |",
                    ]
                    lines += [
                        f"| {f.doc_id} | `{f.prompt}` | `{f.candidate}` | `{f.champion}` |" for f in flips[:FLIPS_SHOWN]
                    ]
                    lines.append("")
    return "\n".join(lines).rstrip() + "\n"
