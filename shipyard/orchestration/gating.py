"""Gating a candidate end to end: evaluate both models (cached), measure RL health, gate_verdict, write the report.

Writes `gate.json` (the decision, naming the candidate, the gate policy and
the per-item results by digest, which the pipeline then signs), `gate.md`
and the candidate's `evals.json` (scores per task) into the report directory
(`home/gates/<candidate digest>-<champion digest>/` unless given). Called by
`shipyard gate` and the release flow.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from transformers import AutoTokenizer

from shipyard.digests import digest_json, directory_digest
from shipyard.evals import health
from shipyard.evals.gate import Baseline, HealthInput, Verdict, gate_verdict
from shipyard.evals.gate_policy import GatePolicy
from shipyard.evals.report import markdown
from shipyard.evals.runner import SuiteResult, evaluate, load_model
from shipyard.evals.stream import Position
from shipyard.evals.suite import load_suite
from shipyard.intake.trainer_state import read_trainer_state
from shipyard.model_dir import require_model_dir
from shipyard.registry.publish import model_digest


def run_gate(
    candidate: Path,
    champion: Path | None,
    policy: GatePolicy,
    home: Path,
    trainer_state: Path | None = None,
    report_dir: Path | None = None,
    position: Position | None = None,
    baseline: tuple[str, Path] | None = None,
) -> tuple[Verdict, Path]:
    """Gate `candidate` against `champion`; `position` is the decision's place in its line's stream, `baseline` the
    release the guard holds it to (its name and directory)."""
    for model in (candidate, champion, baseline[1] if baseline else None):
        if model is not None:
            require_model_dir(model)
    suites = [load_suite(s) for s in policy.suite_refs()]
    ours = evaluate(candidate, suites, home)
    theirs = evaluate(champion, suites, home) if champion else None
    held = Baseline(baseline[0], evaluate(baseline[1], suites, home)) if baseline else None
    measured = measure_health(candidate, champion, ours, policy)
    if trainer_state is not None:
        measured = replace(
            measured, over_optimized=health.over_optimization(read_trainer_state(trainer_state)["log_history"])
        )
    decision = gate_verdict(ours, theirs, policy, measured, position, held)
    out = (
        report_dir
        or home
        / "gates"
        / f"{directory_digest(candidate)[:16]}-{directory_digest(champion)[:16] if champion else 'none'}"
    )
    out.mkdir(parents=True, exist_ok=True)
    named = decision.as_dict() | {
        "candidate_digest": model_digest(candidate),  # publish checks it is this candidate
        "policy_digest": digest_json(policy.model_dump(mode="json")),
        "items_digest": digest_json([{k: v for k, v in r.as_dict().items() if k != "cached"} for r in ours]),
        "suites": {r.suite: sorted(r.scores) for r in ours},  # which tasks each suite ran (the plots group by it)
        "judges": {r.suite: r.judge for r in ours if r.judge},  # who judged each safety suite: kind, model, digest
    }
    (out / "gate.json").write_text(json.dumps(named, indent=1) + "\n")
    (out / "gate.md").write_text(markdown(decision, str(candidate), str(champion) if champion else None))
    scores = {task: values for result in ours for task, values in result.scores.items()}
    (out / "evals.json").write_text(json.dumps(scores, indent=1) + "\n")
    return decision, out


def measure_health(
    candidate: Path, champion: Path | None, results: list[SuiteResult], policy: GatePolicy
) -> HealthInput:
    p = policy.health
    tasks = [items for r in results for items in r.items.values()]
    each = -(-p.prompts // len(tasks))  # the same number from every task
    prompts = [i.prompt for items in tasks for i in items[:each]][: p.prompts]
    tokenizer = AutoTokenizer.from_pretrained(candidate)
    ours = load_model(candidate)
    samples = health.sample(ours, tokenizer, prompts, p.max_new_tokens, seed=0)
    mine = health.describe(samples)
    kl = growth = p95_growth = None
    if champion is not None:
        theirs = load_model(champion)
        if AutoTokenizer.from_pretrained(champion).get_vocab() == tokenizer.get_vocab():
            kl = health.kl_estimate(ours, theirs, tokenizer, prompts, samples)
        baseline = health.describe(health.sample(theirs, tokenizer, prompts, p.max_new_tokens, seed=0))
        growth = mine.mean_length / baseline.mean_length if baseline.mean_length else None
        p95_growth = mine.p95_length / baseline.p95_length if baseline.p95_length else None
    return HealthInput(kl, growth, p95_growth, mine.truncation_rate, mine.repetition)
