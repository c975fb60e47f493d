"""Screening against the champion's raw checkpoint, item by item: worse, equal, better, and no reference."""

import random
from typing import Any

import pytest
from shipyard.evals.runner import Item, SuiteResult
from shipyard.evals.screening import Rule, budget, reference, verdict

RULE = Rule(margin=0.1, alpha=0.05, power=0.8, assumed_discordance=0.1)
N = 200


def screened(right: list[int], digest: str = "suite-v1", step: int = 10) -> dict[str, Any]:
    """A raw checkpoint's screening results on N items, `right` the ones it got right."""
    items = [Item(i, f"doc{i}", f"p{i}", f"q{i}", "", "", {"exact_match": float(i in right)}) for i in range(N)]
    scores = {"task": {"exact_match": len(right) / N}}
    result = SuiteResult("screening", digest, "model", "0.4", scores, {"task": items})
    return reference(result, "task", "exact_match", step, "checkpoint-digest")


def some(share: float, seed: int) -> list[int]:
    return random.Random(seed).sample(range(N), int(share * N))


def test_a_checkpoint_clearly_worse_than_the_champions_raw_checkpoint_is_turned_away() -> None:
    champion = screened(some(0.6, 0))
    worse = screened(some(0.6, 0)[: int(0.35 * N)])  # lost 0.25 of the items it had right
    screen = verdict(worse, champion, RULE, "", seconds=3.0)
    assert not screen.passed and screen.estimate == pytest.approx(-0.25)
    assert screen.upper is not None and screen.upper < -RULE.margin
    assert screen.items == N and screen.mde is not None and 0 < screen.mde < 0.25 and screen.seconds == 3.0
    assert "upper bound" in screen.reason and "< -0.1" in screen.reason and "(step 10)" in screen.reason


def test_equal_slightly_worse_and_better_checkpoints_go_on_to_post_training() -> None:
    champion = screened(some(0.5, 1))
    equal = verdict(screened(some(0.5, 1)), champion, RULE, "", 0.0)
    assert equal.passed and equal.estimate == 0 and equal.reference == pytest.approx(0.5)
    assert equal.mde is not None  # with no discordant item, the MDE uses the policy's assumed discordance
    slightly = verdict(screened(some(0.5, 1)[:90]), champion, RULE, "", 0.0)  # 0.05 lower: within the margin
    assert slightly.passed and slightly.estimate == pytest.approx(-0.05)
    gained = [i for i in range(N) if i not in some(0.5, 1)][:40]
    better = verdict(screened(some(0.5, 1) + gained), champion, RULE, "", 0)
    assert better.passed and better.estimate == pytest.approx(0.2)


def test_without_a_reference_the_checkpoint_goes_on_and_the_reason_says_why() -> None:
    ours = screened(some(0.1, 2))
    none = verdict(ours, None, RULE, "the champion (v3) has no screening results of its raw checkpoint", 0.0)
    assert none.passed and none.estimate is None and "v3" in none.reason and "let through" in none.reason
    other = verdict(ours, screened(some(0.9, 2), digest="suite-v2"), RULE, "", 0.0)
    assert other.passed and "another suite version" in other.reason  # not like with like: no comparison
    disjoint = screened(some(0.9, 2))
    disjoint["items"] = [[i + N, h, v] for i, h, v in disjoint["items"]]
    assert "no item in common" in verdict(ours, disjoint, RULE, "", 0.0).reason


def test_a_reference_is_refused_for_a_task_or_metric_the_suite_does_not_have() -> None:
    result = SuiteResult("s", "d", "m", "0.4", {}, {"task": [Item(0, "h", "p", "q", "", "", {"acc": 1.0})]})
    with pytest.raises(KeyError, match="metric exact_match is not measured by task"):
        reference(result, "task", "exact_match", 10, "c")
    with pytest.raises(KeyError, match="task other is not in the screening suite s"):
        reference(result, "other", "acc", 10, "c")


def test_the_budget_counts_what_screening_spent_and_saved_and_ignores_what_is_not_a_screen() -> None:
    champion = screened(some(0.6, 0))
    turned = verdict(screened(some(0.6, 0)[:60]), champion, RULE, "", seconds=4.0).as_dict()
    kept = verdict(screened(some(0.6, 0)), champion, RULE, "", seconds=2.5).as_dict()
    first = verdict(screened(some(0.6, 0)), None, RULE, "no champion yet", seconds=3.0).as_dict()
    forged = {"passed": True, "seconds": "a lot"}  # an event a store writer made up: counted, costs nothing
    spent = budget([turned, kept, first, None, "screen", {"seconds": 99}, forged])
    assert (spent.screened, spent.turned_away, spent.compared, spent.seconds) == (4, 1, 2, 9.5)
    assert spent.rate == 0.25 and "1 turned away before post-training (25%)" in spent.said()
    assert budget([]).said() == "no checkpoint screened yet" and budget([]).rate is None
