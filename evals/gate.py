"""The release gate: every check of a policy on a candidate's eval results, against its champion's.

`gate_verdict` is a pure function of both models' per-item results, the policy and
the RL-health measurements. Every check records its statistic, threshold,
p-value or interval and verdict; regression checks carry the items that
flipped (right → wrong and wrong → right, with prompt and both responses) and
the suite's size against the drop it must catch. Safety checks, overall and
per harm category (`evals.categories`), are vetoes:
the candidate passes only if every check passes, so no gain elsewhere can buy
one back. With no champion, floors, safety and the candidate's own health
apply. Given the decision's place in its line (`evals.stream`), the verdict
records its e-value and e-LOND level, and with `regression.stream` e-LOND
decides regressions; given a baseline, the guard holds the candidate within
delta of it. Called by `shipyard gate` and the release flow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from shipyard.evals.categories import CategoryStat, category_verdicts
from shipyard.evals.gate_policy import GatePolicy
from shipyard.evals.runner import Item, SuiteResult, paired
from shipyard.evals.stats import PairedTest, detectable_effect, holm, items_needed, paired_test, spread
from shipyard.evals.stream import Position, StreamCheck, e_value, guard, stream_check

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Check:
    name: str
    kind: str  # floor | regression | safety | health
    passed: bool
    statistic: float | None
    threshold: str
    p_value: float | None = None
    interval: tuple[float, float] | None = None
    detail: str = ""


@dataclass(frozen=True)
class Flip:
    task: str
    doc_id: int
    direction: str  # "right→wrong" or "wrong→right"
    prompt: str
    candidate: str
    champion: str


@dataclass(frozen=True)
class Size:
    task: str
    items: int
    detectable_effect: float  # smallest drop caught with the policy's power
    items_needed: int
    sufficient: bool


@dataclass
class Verdict:
    passed: bool
    checks: list[Check]
    flips: list[Flip] = field(default_factory=list)
    sizes: list[Size] = field(default_factory=list)
    stream: dict[str, Any] | None = None  # this decision's place in the line's stream (`StreamCheck`)
    categories: list[CategoryStat] = field(default_factory=list)  # the safety tasks' numbers per harm category

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def as_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **asdict(self)}


@dataclass(frozen=True)
class HealthInput:
    """RL-health measurements; champion-relative ones are None without a champion."""

    kl: float | None
    length_growth: float | None  # mean response length, candidate / champion
    p95_growth: float | None  # 95th-percentile response length, candidate / champion
    truncation_rate: float
    repetition: float
    over_optimized: tuple[bool, str] | None = None  # from the trainer's log, when known


@dataclass(frozen=True)
class Baseline:
    """The release the guard holds every candidate to: its name (v3) and its per-item results."""

    name: str
    results: list[SuiteResult]


def gate_verdict(
    candidate: list[SuiteResult],
    champion: list[SuiteResult] | None,
    policy: GatePolicy,
    health: HealthInput | None,
    position: Position | None = None,
    baseline: Baseline | None = None,
) -> Verdict:
    """Every check of `policy`. With a champion and the decision's `position` in its line, also the stream's
    e-LOND check (deciding regressions when `regression.stream` is on); with a `baseline`, the guard."""
    scores, items = _merge(candidate)
    checks = [_floor(task, floor.metric, floor.min, scores) for task, floor in policy.floors.items()]
    flips: list[Flip] = []
    sizes: list[Size] = []
    stream: dict[str, Any] | None = None
    if champion is not None:
        champion_scores, champion_items = _merge(champion)
        tests = {}
        for task, metric in policy.regression.tasks.items():
            pairs = paired(items.get(task, []), champion_items.get(task, []))
            problem = "no items both models saw" if not pairs else ""
            if pairs and metric not in pairs[0][0].metrics:
                problem = f"metric {metric} not measured; the task has {', '.join(sorted(pairs[0][0].metrics))}"
            if problem:
                checks.append(Check(f"no regression: {task}", "regression", False, None, "", detail=problem))
                continue
            tests[task] = _paired(pairs, metric, policy)
            flips += _flips(task, metric, pairs)
            sizes.append(_size(task, pairs, metric, tests[task], policy))
        corrected = holm({task: t.p_value for task, t in tests.items()}, policy.alpha)
        per_release = [_regression(task, test, *corrected[task], policy) for task, test in tests.items()]
        if position is not None:
            e = sum(float(e_value(t.regressed, t.improved)) for t in tests.values()) / len(tests) if tests else 1.0
            streamed = stream_check(e, policy.alpha, position.t, position.blocks_before, position.line)
            stream = streamed.as_dict()
            if policy.regression.stream:  # the stream decides; each release's p-values are reported
                per_release = [replace(c, passed=True, detail=f"{c.detail}; the stream decides") for c in per_release]
                per_release.append(_streamed(streamed))
        checks += per_release
    else:
        champion_scores = None
    if baseline is not None:
        checks += _guard(items, baseline, policy)
    checks += _safety(scores, champion_scores, policy)
    sizes += _safety_sizes(items, policy)
    categories, by_category = category_verdicts(items, _merge(champion)[1] if champion else None, policy)
    checks += [
        Check(c.name, "safety", c.passed, c.statistic, c.threshold, c.p_value, None, c.detail) for c in by_category
    ]
    if health is not None:
        checks += _health(health, policy)
    return Verdict(all(c.passed for c in checks), checks, flips, sizes, stream, categories)


def _streamed(check: StreamCheck) -> Check:
    detail = (
        f"decision {check.t} of the line, {check.blocks_before} blocked before; alpha not yet allotted"
        f" {check.budget_left:.4g}"
    )
    threshold = f"e-value < 1 / alpha_t = {1 / check.level:.4g} (e-LOND)"
    return Check(
        "no regression: the line's stream",
        "regression",
        not check.blocked,
        check.e_value,
        threshold,
        None,
        None,
        detail,
    )


def _guard(items: dict[str, list[Item]], baseline: Baseline, policy: GatePolicy) -> list[Check]:
    """Each regression task against the baseline: not more than delta below it (one-sided lower bound)."""
    _, theirs = _merge(baseline.results)
    reg, checks = policy.regression, []
    for task, metric in reg.tasks.items():
        name = f"guard: {task} vs {baseline.name}"
        pairs = paired(items.get(task, []), theirs.get(task, []))
        if not pairs or metric not in pairs[0][0].metrics:
            checks.append(Check(name, "regression", False, None, "", detail="no items both models saw"))
            continue
        ours, base = [a.metrics[metric] for a, _ in pairs], [b.metrics[metric] for _, b in pairs]
        held = guard(ours, base, reg.delta, policy.alpha, reg.bootstrap_iters)
        threshold = f"one-sided {1 - policy.alpha:.0%} lower bound ≥ -{reg.delta:g}"
        detail = f"{held.items} items; lower bound {held.lower:+.3f}"
        checks.append(Check(name, "regression", held.passed, held.estimate, threshold, None, None, detail))
    return checks


def _merge(results: list[SuiteResult]) -> tuple[dict[str, dict[str, float]], dict[str, list[Item]]]:
    scores = {task: s for r in results for task, s in r.scores.items()}
    items = {task: i for r in results for task, i in r.items.items()}
    return scores, items


def _paired(pairs: list[tuple[Item, Item]], metric: str, policy: GatePolicy) -> PairedTest:
    ours = [a.metrics[metric] for a, _ in pairs]
    theirs = [b.metrics[metric] for _, b in pairs]
    return paired_test(ours, theirs, policy.alpha, iters=policy.regression.bootstrap_iters)


def _size(task: str, pairs: list[tuple[Item, Item]], metric: str, test: PairedTest, policy: GatePolicy) -> Size:
    n, reg = len(pairs), policy.regression
    ours, theirs = [a.metrics[metric] for a, _ in pairs], [b.metrics[metric] for _, b in pairs]
    variance = spread(ours, theirs, test.estimate, reg.assumed_discordance)
    needed = items_needed(reg.delta, variance, policy.alpha, reg.power)
    effect = detectable_effect(n, variance, policy.alpha, reg.power)
    return Size(task, n, effect, needed, n >= needed)


def _flips(task: str, metric: str, pairs: list[tuple[Item, Item]]) -> list[Flip]:
    flips = []
    for ours, theirs in pairs:
        a, b = ours.metrics[metric], theirs.metrics[metric]
        if a != b:
            direction = "wrong→right" if a > b else "right→wrong"
            flips.append(Flip(task, ours.doc_id, direction, ours.prompt, ours.response, theirs.response))
    return flips


def _floor(task: str, metric: str, least: float, scores: dict[str, dict[str, float]]) -> Check:
    value = scores.get(task, {}).get(metric)
    if value is None:
        return Check(
            f"floor: {task}", "floor", False, None, f"{metric} ≥ {least}", detail="task or metric not evaluated"
        )
    return Check(f"floor: {task}", "floor", value >= least, value, f"{metric} ≥ {least}")


def _regression(task: str, test: PairedTest, regressed: bool, adjusted: float, policy: GatePolicy) -> Check:
    detail = f"{test.regressed} right→wrong, {test.improved} wrong→right; Holm-adjusted p {adjusted:.4g}"
    threshold = f"one-sided p, Holm-adjusted, > {policy.alpha:.4g}; drop to catch {policy.regression.delta}"
    return Check(
        f"no regression: {task}",
        "regression",
        not regressed,
        test.estimate,
        threshold,
        test.p_value,
        test.interval,
        detail,
    )


def _safety(
    scores: dict[str, dict[str, float]], champion: dict[str, dict[str, float]] | None, policy: GatePolicy
) -> list[Check]:
    s = policy.safety
    checks = []
    if s.harmful_task is not None:
        rate = scores.get(s.harmful_task, {}).get(s.metric)
        checks.append(
            _bound(
                f"safety: {s.harmful_task} floor",
                rate,
                rate is not None and rate >= s.harmful_floor,
                f"≥ {s.harmful_floor}",
            )
        )
        theirs = champion.get(s.harmful_task, {}).get(s.metric) if champion else None
        if theirs is not None:
            least = theirs - s.harmful_margin
            ok = rate is not None and rate >= least
            checks.append(
                _bound(
                    f"safety: {s.harmful_task} vs champion", rate, ok, f"≥ champion {theirs:.3f} - {s.harmful_margin}"
                )
            )
    if s.benign_task is not None:
        rate = scores.get(s.benign_task, {}).get(s.metric)
        checks.append(
            _bound(
                f"safety: {s.benign_task} over-refusal",
                rate,
                rate is not None and rate <= s.benign_ceiling,
                f"≤ {s.benign_ceiling}",
            )
        )
    return checks


def _safety_sizes(items: dict[str, list[Item]], policy: GatePolicy) -> list[Size]:
    """How large a change of a refusal rate each safety task can show (worst-case variance 1/4 per item)."""
    s = policy.safety
    sizes = []
    for task in (s.harmful_task, s.benign_task):
        if task is not None and task in items:
            n = len(items[task])
            needed = items_needed(s.harmful_margin, 0.25, policy.alpha, policy.regression.power)
            effect = detectable_effect(n, 0.25, policy.alpha, policy.regression.power)
            sizes.append(Size(task, n, effect, needed, n >= needed))
    return sizes


def _bound(name: str, value: float | None, passed: bool, threshold: str) -> Check:
    detail = "" if value is not None else "task or metric not evaluated"
    return Check(name, "safety", passed, value, threshold, detail=detail)


def _health(h: HealthInput, policy: GatePolicy) -> list[Check]:
    p = policy.health
    limits = [
        ("KL(candidate ‖ champion) per response", h.kl, p.max_kl),
        ("mean length vs champion", h.length_growth, p.max_length_growth),
        ("p95 length vs champion", h.p95_growth, p.max_length_growth),
        ("truncation rate", h.truncation_rate, p.max_truncation),
        ("repeated 3-grams", h.repetition, p.max_repetition),
    ]
    checks = [
        Check(f"health: {name}", "health", value <= limit, value, f"≤ {limit}")
        for name, value, limit in limits
        if value is not None and limit is not None
    ]
    if h.over_optimized is not None and p.block_over_optimization:
        flagged, detail = h.over_optimized
        checks.append(
            Check(
                "health: over-optimization", "health", not flagged, None, "reward up while held-out down", detail=detail
            )
        )
    return checks
