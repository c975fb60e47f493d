"""Screening: is a raw checkpoint worth post-training? Compared like with like, item by item.

A raw checkpoint is compared with the raw checkpoint the champion was made from — not with the post-trained
champion, which post-training has moved — on the same task of the same suite, item by item. Each release carries
its raw checkpoint's per-item screening results (`screening` in its manifest, a `Reference`), so the comparison
needs neither the old checkpoint nor a new evaluation of it.

The rule is a paired non-inferiority test: the checkpoint is turned away only when the upper end of the
one-sided (1 - alpha) confidence bound of the mean per-item difference (checkpoint minus reference) lies below
-margin: it is worse than the champion's raw checkpoint by more than the margin, with confidence 1 - alpha.
Better, equal, slightly worse, or too few items to tell: it goes on to post-training and the gate. Where there is
no reference (no champion; a champion published by hand or before screening; a reference screened on another
version of the suite) it goes on, and the reason says which. The screen's size is its minimum detectable effect
at the policy's power, beside the gate's. `budget` adds up what screening cost and saved on a line. Pure
functions; called by `shipyard.orchestration.pipeline.screen`, the dashboard, the watch flow and the demo.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from shipyard.evals.stats import detectable_effect, paired_test, spread

if TYPE_CHECKING:
    from shipyard.evals.runner import SuiteResult


@dataclass(frozen=True)
class Screen:
    """A screening decision and its numbers (what the checkpoint's fate records)."""

    passed: bool
    reason: str
    task: str = ""
    metric: str = ""
    score: float | None = None  # the checkpoint's
    reference: float | None = None  # the champion's raw checkpoint's, on the same items
    reference_step: int | None = None
    estimate: float | None = None  # mean per-item difference, checkpoint minus reference
    upper: float | None = None  # its one-sided (1 - alpha) upper bound
    margin: float | None = None
    items: int = 0
    mde: float | None = None  # the drop the screen catches with the policy's power
    seconds: float = 0.0  # what evaluating the checkpoint cost here (0: its results were cached)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Rule:
    """The screening rule's numbers: the margin, and the gate policy's alpha, power and assumed discordance."""

    margin: float
    alpha: float
    power: float
    assumed_discordance: float
    bootstrap_iters: int = 2000


def reference(result: SuiteResult, task: str, metric: str, step: int, checkpoint_digest: str) -> dict[str, Any]:
    """What a release keeps of its raw checkpoint's screen: the suite's digest and each item's value."""
    if task not in result.items:
        raise KeyError(f"task {task} is not in the screening suite {result.suite}")
    measured = result.items[task][0].metrics if result.items[task] else {}
    if metric not in measured:
        raise KeyError(f"metric {metric} is not measured by {task} (it has {', '.join(sorted(measured)) or 'none'})")
    return {
        "suite": result.suite,
        "suite_digest": result.suite_digest,
        "task": task,
        "metric": metric,
        "step": step,
        "checkpoint_digest": checkpoint_digest,
        "score": result.scores.get(task, {}).get(metric),
        "items": [[i.doc_id, i.doc_hash, i.metrics[metric]] for i in result.items[task]],
    }


def verdict(ours: dict[str, Any], theirs: dict[str, Any] | None, rule: Rule, unknown: str, seconds: float) -> Screen:
    """Screen `ours` (a `reference` of the checkpoint) against `theirs` (the champion's raw checkpoint's), or let it
    through saying `unknown` when there is none."""
    task, metric, score = ours["task"], ours["metric"], ours["score"]
    said = f"{task} {metric} {score:.3f}" if isinstance(score, float) else f"{task} {metric}"
    through = Screen(True, "", task, metric, score, margin=rule.margin, seconds=seconds)
    if theirs is None:
        return _with(through, f"{said}; {unknown}: let through")
    if (theirs.get("suite_digest"), theirs.get("task"), theirs.get("metric")) != (ours["suite_digest"], task, metric):
        why = f"the champion's raw checkpoint was screened on {theirs.get('suite')} {theirs.get('task')} (another"
        return _with(through, f"{said}; {why} suite version or task): let through")
    by_item = {(doc_id, doc_hash): value for doc_id, doc_hash, value in theirs.get("items", [])}
    pairs = [(value, by_item[(i, h)]) for i, h, value in ours["items"] if (i, h) in by_item]
    if not pairs:
        return _with(through, f"{said}; no item in common with the champion's raw checkpoint: let through")
    mine, reference_values = [a for a, _ in pairs], [b for _, b in pairs]
    test = paired_test(mine, reference_values, rule.alpha, rule.bootstrap_iters)
    variance = spread(mine, reference_values, test.estimate, rule.assumed_discordance)
    mde = detectable_effect(len(pairs), variance, rule.alpha, rule.power)
    upper, passed = test.interval[1], test.interval[1] >= -rule.margin
    ref_score = sum(reference_values) / len(pairs)
    step = theirs.get("step")
    reason = (
        f"{said} vs {ref_score:.3f} for the champion's raw checkpoint (step {step}): {test.estimate:+.3f}, upper"
        f" bound {upper:+.3f} {'≥' if passed else '<'} -{rule.margin:g} on {len(pairs)} items (MDE {mde:.3f})"
    )
    numbers = {"reference": ref_score, "reference_step": step, "estimate": test.estimate, "upper": upper}
    return Screen(
        **(through.as_dict() | numbers | {"passed": passed, "reason": reason, "items": len(pairs), "mde": mde})
    )


def _with(screen: Screen, reason: str) -> Screen:
    return Screen(**(screen.as_dict() | {"reason": reason}))


@dataclass(frozen=True)
class Budget:
    """What screening cost and saved on a line, from the screens its checkpoints' fates recorded."""

    screened: int
    turned_away: int  # each one a post-training (and a gate) not run
    seconds: float  # evaluating raw checkpoints (cached results count 0)
    compared: int  # screened against the champion's raw checkpoint (the rest had no reference)

    @property
    def rate(self) -> float | None:
        return self.turned_away / self.screened if self.screened else None

    def said(self) -> str:
        if not self.screened:
            return "no checkpoint screened yet"
        return (
            f"{self.screened} screened ({self.compared} against the champion's raw checkpoint) in {self.seconds:.0f} s;"
            f" {self.turned_away} turned away before post-training ({self.rate:.0%})"
        )


def budget(screens: Iterable[Any]) -> Budget:
    """Add up screens (each a `Screen` as a dict, from an event's data; anything else is not counted)."""
    counted = [s for s in screens if isinstance(s, dict) and isinstance(s.get("passed"), bool)]
    seconds = 0.0
    for s in counted:
        with contextlib.suppress(TypeError, ValueError):  # a forged event's odd value adds nothing
            seconds += max(float(s.get("seconds") or 0.0), 0.0)
    return Budget(
        len(counted),
        sum(1 for s in counted if not s["passed"]),
        seconds,
        sum(1 for s in counted if s.get("estimate") is not None),
    )
