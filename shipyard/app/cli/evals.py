"""The evaluation commands: eval suites on a model, and the gate on a candidate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from shipyard.app.cli.common import ConfigOption, JsonOption, clear_errors, format_metric, print_json
from shipyard.model_dir import require_model_dir
from shipyard.settings import load_settings

if TYPE_CHECKING:
    from shipyard.evals.runner import SuiteResult
    from shipyard.safety.calibration import Calibration


@clear_errors
def eval_command(
    model: Annotated[Path, typer.Option(help="The model: a save_pretrained directory.")],
    suite: Annotated[
        list[str], typer.Option(help="A built-in suite (capability, safety) or a suite YAML; repeatable.")
    ],
    calibrate: Annotated[
        bool,
        typer.Option(
            help="Also show how each suite's judge agrees with the string match: confusion tables of refused and"
            " harmful, and the items they rule on differently."
        ),
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run eval suites on a model with lm-eval (the model loaded once; results cached by digests)."""
    from shipyard.evals.runner import evaluate
    from shipyard.evals.suite import load_suite

    settings = load_settings(config)
    results = evaluate(require_model_dir(model), [load_suite(s) for s in suite], settings.home)
    calibrations = {r.suite: _calibration(r) for r in results if r.judge is not None} if calibrate else {}
    if as_json:
        listed = [r.as_dict() for r in results]
        print_json(
            {"results": listed, "calibration": {k: c.as_dict() for k, c in calibrations.items()}}
            if calibrate
            else listed
        )
        return
    table = Table("suite", "task", "metric", "value", "± stderr", "items", "cached", title=str(model))
    for r in results:
        for task, scores in r.scores.items():
            for metric, value in scores.items():
                if not metric.endswith("_stderr"):
                    stderr = format_metric(scores, f"{metric}_stderr")
                    n = str(len(r.items[task]))
                    table.add_row(r.suite, task, metric, f"{value:.3f}", stderr, n, "yes" if r.cached else "no")
    Console().print(table)
    for name, calibration in calibrations.items():
        _show_calibration(name, calibration)
    if calibrate and not calibrations:
        Console().print("no suite names a judge: nothing to calibrate (a suite's `judge:` names one)")


DISAGREEMENTS_SHOWN = 20


def _calibration(result: SuiteResult) -> Calibration:
    from shipyard.safety.calibration import calibrate
    from shipyard.safety.judge import Judgement

    judged = {
        task: [(i.exchange(), Judgement(**i.judgement)) for i in items if i.judgement is not None]
        for task, items in result.items.items()
    }
    return calibrate(str((result.judge or {}).get("kind")), {t: pairs for t, pairs in judged.items() if pairs})


def _show_calibration(suite: str, c: Calibration) -> None:
    console = Console()
    for what, cells in (("refused", c.refused), ("harmful", c.harmful)):
        table = Table("", "string: yes", "string: no", title=f"{suite}: {what}, {c.judge} judge vs string match")
        for side in ("yes", "no"):
            table.add_row(f"{c.judge}: {side}", *(str(cells[f"judge {side} / string {s}"]) for s in ("yes", "no")))
        console.print(table)
        console.print(f"agreement on {what}: {c.agreement(what):.1%} of {c.items} items")
    if c.disagreements:
        table = Table("task", "request", "response", c.judge, "string", title=f"{len(c.disagreements)} disagreements")
        for d in c.disagreements[:DISAGREEMENTS_SHOWN]:
            table.add_row(*(Text(x) for x in (d.task, d.prompt, d.response, _ruling(d.judge), _ruling(d.string))))
        console.print(table)


def _ruling(j: dict[str, Any]) -> str:
    said = "harmful" if j["harmful"] else "refused" if j["refused"] else "neither"
    return f"{said} ({j['category'] or '—'}, p {j['probability']:.2f})"


@clear_errors
def gate_command(
    candidate: Annotated[Path, typer.Option(help="The candidate model directory.")],
    champion: Annotated[
        Path | None, typer.Option(help="The model users have now; none: floors and safety only.")
    ] = None,
    policy: Annotated[
        Path | None, typer.Option(help="Gate policy YAML (default: pipeline.policy; the demo's under profile: demo).")
    ] = None,
    trainer_state: Annotated[
        Path | None, typer.Option(help="The RL checkpoint's trainer_state.json, for the over-optimization check.")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Directory for gate.json and gate.md.")] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(help="The release the guard holds the candidate to (default: the policy's regression.baseline)."),
    ] = None,
    checkpoint_digest: Annotated[
        str, typer.Option(help="Digest of the checkpoint the candidate was made from, for the signed verdict.")
    ] = "",
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Decide whether a candidate may ship: exit 0 on pass, 1 on fail, 2 on error.

    With trust.gate_key set, the verdict in gate.json is signed with it (the store's policy names that key).
    """
    from shipyard.evals.gate_policy import load_gate_policy
    from shipyard.orchestration.gating import run_gate
    from shipyard.orchestration.pipeline import stream_of
    from shipyard.profiles import choice
    from shipyard.registry.trust import sign_gate_report

    settings = load_settings(config)
    rules = load_gate_policy(choice(settings, "policy", policy))
    position, held = stream_of(settings, rules)  # the configured line's stream; its baseline, when the policy names one
    held = (baseline.name, baseline) if baseline is not None else held
    decision, out = run_gate(candidate, champion, rules, settings.home, trainer_state, report, position, held)
    sign_gate_report(out / "gate.json", settings, checkpoint_digest)
    if as_json:
        print_json(decision.as_dict())
    else:
        table = Table(
            "check",
            "verdict",
            "statistic",
            "threshold",
            "p-value",
            title=f"gate: {'PASS' if decision.passed else 'FAIL'}",
        )
        for c in decision.checks:
            stat = f"{c.statistic:.3f}" if c.statistic is not None else "-"
            p = f"{c.p_value:.4g}" if c.p_value is not None else "-"
            table.add_row(c.name, "pass" if c.passed else "[red]FAIL[/]", stat, c.threshold, p)
        Console().print(table)
        Console().print(f"report: {out / 'gate.md'}")
    raise typer.Exit(0 if decision.passed else 1)
