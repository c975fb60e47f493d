"""The release gate: pure decisions on synthetic results, and the `shipyard gate` command on real models."""

import json
from pathlib import Path

import pytest
import torch
from shipyard.evals.gate import HealthInput, gate_verdict
from shipyard.evals.gate_policy import load_gate_policy
from shipyard.evals.health import over_optimization, repeated_ngrams
from shipyard.evals.runner import Item, SuiteResult
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from shipyard.app.cli.main import app
from shipyard.demo.profile import POLICY as DEFAULT_POLICY

POLICY = load_gate_policy(DEFAULT_POLICY)
HEALTHY = HealthInput(kl=0.1, length_growth=1.0, p95_growth=1.1, truncation_rate=0.0, repetition=0.0)


def result(suite: str, task: str, metric: str, outcomes: list[float]) -> SuiteResult:
    items = [
        Item(i, f"d{i}", f"p{i}", f"prompt {i}", f"response {v}", "t", {metric: v}) for i, v in enumerate(outcomes)
    ]
    score = sum(outcomes) / len(outcomes)
    return SuiteResult(suite, "sd", "md", "0.4", {task: {metric: score}}, {task: items})


def judged(task: str, kind: str, refusals: list[float], category: str = "violence") -> SuiteResult:
    """A safety task as the string judge leaves it: each item labelled, refusal and harmful compliance measured."""
    items = [
        Item(
            i,
            f"d{i}",
            f"p{i}",
            f"prompt {i}",
            f"response {v}",
            "",
            {"refusal": v, "harmful": float(kind == "harmful" and not v)},
            {"prompt": f"request {i}", "kind": kind, "category": category},
        )
        for i, v in enumerate(refusals)
    ]
    scores = {m: sum(i.metrics[m] for i in items) / len(items) for m in ("refusal", "harmful")}
    return SuiteResult("safety", "sd", "md", "0.4", {task: scores}, {task: items})


def model(arithmetic: list[float], harmful: float = 1.0, benign: float = 0.0) -> list[SuiteResult]:
    return [
        result("capability", "shipyard_arithmetic_heldout", "exact_match", arithmetic),
        result("capability", "shipyard_arithmetic_choice", "acc", arithmetic),
        judged("shipyard_refusal_harmful", "harmful", [harmful] * 20),
        judged("shipyard_refusal_benign", "benign", [benign] * 10),
    ]


def test_identical_candidate_and_champion_pass() -> None:
    outcomes = [1.0, 0.0] * 100
    decision = gate_verdict(model(outcomes), model(outcomes), POLICY, HEALTHY)
    assert decision.passed, decision.failed
    assert not decision.flips
    assert {c.kind for c in decision.checks} == {"floor", "regression", "safety", "health"}


def test_a_regression_fails_with_its_flipped_items() -> None:
    champion = [1.0] * 150 + [0.0] * 50
    candidate = [0.0] * 30 + [1.0] * 120 + [0.0] * 50
    decision = gate_verdict(model(candidate), model(champion), POLICY, HEALTHY)
    assert not decision.passed
    failed = {c.name for c in decision.failed}
    assert failed == {"no regression: shipyard_arithmetic_heldout", "no regression: shipyard_arithmetic_choice"}
    check = next(c for c in decision.checks if c.name == "no regression: shipyard_arithmetic_heldout")
    assert check.statistic == pytest.approx(-0.15) and check.p_value is not None and check.p_value < 1e-6
    flips = [f for f in decision.flips if f.task == "shipyard_arithmetic_heldout"]
    assert len(flips) == 30 and {f.direction for f in flips} == {"right→wrong"}


def test_safety_veto_holds_even_when_capability_improves() -> None:
    champion = [1.0] * 100 + [0.0] * 100
    candidate = [1.0] * 190 + [0.0] * 10
    decision = gate_verdict(model(candidate, harmful=0.5), model(champion), POLICY, HEALTHY)
    assert not decision.passed
    assert {c.kind for c in decision.failed} == {"safety"}
    assert all(c.passed for c in decision.checks if c.kind == "regression")


def test_without_a_champion_floors_and_safety_apply() -> None:
    decision = gate_verdict(model([0.0] * 200, benign=1.0), None, POLICY, HEALTHY)
    failed = {c.name for c in decision.failed}
    assert "floor: shipyard_arithmetic_heldout" in failed
    assert "safety: shipyard_refusal_benign over-refusal" in failed
    assert not any(c.kind == "regression" for c in decision.checks)


def test_a_policy_naming_a_metric_the_task_lacks_fails_with_the_reason() -> None:
    policy = POLICY.model_copy(
        update={"regression": POLICY.regression.model_copy(update={"tasks": {"shipyard_arithmetic_choice": "f1"}})}
    )
    decision = gate_verdict(model([1.0] * 200), model([1.0] * 200), policy, HEALTHY)
    [check] = [c for c in decision.checks if c.kind == "regression"]
    assert not check.passed and check.detail == "metric f1 not measured; the task has acc"


def test_suite_sizes_say_when_a_suite_is_too_small() -> None:
    candidate = [1.0, 0.0] * 100
    champion = [0.0, 1.0] * 10 + candidate[20:]  # 20 discordant items of 200
    decision = gate_verdict(model(candidate), model(champion), POLICY, HEALTHY)
    sizes = {s.task: s for s in decision.sizes}
    assert sizes["shipyard_arithmetic_heldout"].sufficient
    assert not sizes["shipyard_refusal_benign"].sufficient  # 10 items cannot show a 0.1 change
    assert sizes["shipyard_refusal_benign"].detectable_effect > 0.3


def test_over_optimization_and_repetition_signals() -> None:
    history = [{"step": s, "reward": 0.1 * s} for s in range(1, 31)]
    history += [
        {"step": 10, "eval_accuracy": 0.8},
        {"step": 20, "eval_accuracy": 0.7},
        {"step": 30, "eval_accuracy": 0.6},
    ]
    flagged, detail = over_optimization(sorted(history, key=lambda e: e["step"]))
    assert flagged and "held-out score -0.200" in detail
    assert repeated_ngrams([1, 2, 3, 1, 2, 3]) == pytest.approx(1 / 4)
    assert repeated_ngrams([1, 2, 3, 4]) == 0.0


@pytest.mark.slow
def test_gate_command_passes_a_model_against_itself_and_fails_a_damaged_one(
    rl_checkpoint: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"  # capability only: the short RL run has not learnt to refuse
    policy.write_text(
        "suites: [capability]\n"
        "floors: {shipyard_arithmetic_heldout: {metric: exact_match, min: 0.2}}\n"
        "regression: {tasks: {shipyard_arithmetic_heldout: exact_match, shipyard_arithmetic_choice: acc}}\n"
        "safety: {harmful_task: null, benign_task: null}\n"
    )
    runner = CliRunner()
    same = runner.invoke(
        app,
        [
            "gate",
            "--candidate",
            str(rl_checkpoint),
            "--champion",
            str(rl_checkpoint),
            "--policy",
            str(policy),
            "--json",
        ],
    )
    assert same.exit_code == 0, same.output
    assert json.loads(same.stdout)["passed"]

    damaged = tmp_path / "damaged"
    model = AutoModelForCausalLM.from_pretrained(rl_checkpoint)
    with torch.no_grad():
        weight = model.model.layers[0].mlp.down_proj.weight  # noise in one layer: accuracy ~0.5 -> ~0.2
        weight.add_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)) * weight.abs().max() * 0.5)
    model.save_pretrained(damaged)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (rl_checkpoint / name).exists():
            (damaged / name).write_bytes((rl_checkpoint / name).read_bytes())
    report = tmp_path / "report"
    bad = runner.invoke(
        app,
        [
            "gate",
            "--candidate",
            str(damaged),
            "--champion",
            str(rl_checkpoint),
            "--policy",
            str(policy),
            "--report",
            str(report),
        ],
    )
    assert bad.exit_code == 1, bad.output
    decision = json.loads((report / "gate.json").read_text())
    failed = [c["name"] for c in decision["checks"] if not c["passed"]]
    assert "no regression: shipyard_arithmetic_heldout" in failed
    assert any(f["direction"] == "right→wrong" for f in decision["flips"])
    text = (report / "gate.md").read_text()
    assert "# Release gate: FAIL" in text and "right→wrong" in text

    streamed = tmp_path / "streamed.yaml"  # e-LOND decides; the guard holds the candidate to a baseline
    streamed.write_text(policy.read_text().replace("acc}}", "acc}, stream: true}"))
    command = ["gate", "--candidate", str(damaged), "--champion", str(rl_checkpoint), "--policy", str(streamed)]
    guarded = runner.invoke(app, [*command, "--baseline", str(rl_checkpoint), "--report", str(tmp_path / "s")])
    assert guarded.exit_code == 1, guarded.output
    decision = json.loads((tmp_path / "s" / "gate.json").read_text())
    assert decision["stream"]["t"] == 1 and decision["stream"]["blocks_before"] == 0  # a line with no decision yet
    failed = {c["name"] for c in decision["checks"] if not c["passed"]}
    assert "guard: shipyard_arithmetic_heldout vs " + rl_checkpoint.name in failed
    assert "no regression: the line's stream" in {c["name"] for c in decision["checks"]}
    assert "- stream: decision 1 of the line" in (tmp_path / "s" / "gate.md").read_text()

    missing = runner.invoke(app, ["gate", "--candidate", str(tmp_path / "nope"), "--policy", str(policy)])
    assert missing.exit_code == 2 and "not a model directory" in missing.output


def test_the_report_keeps_model_text_inside_its_table_cells() -> None:
    from markdown_it import MarkdownIt
    from shipyard.evals.gate import Check, Flip, Verdict
    from shipyard.evals.report import markdown

    hostile = "a | b\n# heading\n``` code `x` <script>alert(1)</script>"
    flips = [Flip("t|1", 3, "right→wrong", hostile, hostile, "ok")]
    decision = Verdict(
        False, [Check("no regression: t|1", "regression", False, -0.1, "p > 0.05", detail=hostile)], flips
    )
    html = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown(decision, "cand", "champ"))
    rows = html.split("<tr>")[1:]
    assert all(row.count("<td>") in (0, 4, 7) for row in rows)  # every row has its table's cells, no more
    assert "<script>" not in html and "<h1>heading" not in html
    assert html.count("&lt;script&gt;") == 3  # in the check's detail and both answers: shown, never run


def test_the_stream_decides_regressions_over_the_line_and_the_guard_holds_candidates_to_a_baseline() -> None:
    from shipyard.evals.gate import Baseline
    from shipyard.evals.stream import Position

    streamed = POLICY.model_copy(update={"regression": POLICY.regression.model_copy(update={"stream": True})})
    champion = [1.0] * 120 + [0.0] * 80
    slipped = [0.0] * 16 + [1.0] * 104 + [0.0] * 76 + [1.0] * 4  # 16 right -> wrong, 4 wrong -> right
    per_release = gate_verdict(model(slipped), model(champion), POLICY, HEALTHY, Position(50, 0))
    assert not per_release.passed  # p < alpha for this release alone
    assert per_release.stream is not None and not per_release.stream["blocked"]  # recorded even when not deciding
    late = gate_verdict(model(slipped), model(champion), streamed, HEALTHY, Position(50, 0))
    assert late.passed, late.failed  # at the line's 50th decision, this evidence is not enough for e-LOND
    reported = next(c for c in late.checks if c.name == "no regression: shipyard_arithmetic_heldout")
    assert reported.passed and reported.p_value is not None and reported.p_value < 0.05
    assert "the stream decides" in reported.detail
    collapsed = [0.0] * 60 + [1.0] * 60 + [0.0] * 80  # 60 right -> wrong
    blocked = gate_verdict(model(collapsed), model(champion), streamed, HEALTHY, Position(50, 3))
    [stream] = [c for c in blocked.failed if c.name == "no regression: the line's stream"]
    assert stream.statistic is not None and stream.statistic > 1e6 and "3 blocked before" in stream.detail
    assert blocked.stream is not None and blocked.stream["t"] == 50 and blocked.stream["blocked"]

    baseline = Baseline("v1", model([1.0] * 160 + [0.0] * 40))  # 0.8; the candidate is 0.6: more than delta below
    drifted = gate_verdict(model(champion), model(champion), POLICY, HEALTHY, None, baseline)
    failed = {c.name for c in drifted.failed}
    assert failed == {"guard: shipyard_arithmetic_heldout vs v1", "guard: shipyard_arithmetic_choice vs v1"}
    near = Baseline("v1", model([1.0] * 125 + [0.0] * 75))  # 0.625: within delta
    assert gate_verdict(model(champion), model(champion), POLICY, HEALTHY, None, near).passed
