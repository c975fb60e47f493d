"""The gate's statistics on synthetic per-item outcomes: false blocks at most alpha, power where promised."""

import random

from evals.stats import detectable_effect, holm, items_needed, mcnemar, paired_bootstrap

ALPHA, DELTA, DISCORDANT, POWER = 0.05, 0.05, 0.1, 0.8


def trial(rng: random.Random, n: int, drop: float) -> tuple[list[float], list[float]]:
    """Champion right with p 0.7; an item is discordant with p DISCORDANT, split so the candidate loses `drop`."""
    champion, candidate = [], []
    lose = (DISCORDANT + drop) / 2  # P(champion right, candidate wrong)
    for _ in range(n):
        u = rng.random()
        if u < lose:
            champion.append(1.0), candidate.append(0.0)
        elif u < DISCORDANT:
            champion.append(0.0), candidate.append(1.0)
        else:
            same = float(rng.random() < 0.7)
            champion.append(same), candidate.append(same)
    return candidate, champion


def test_mcnemar_false_block_rate_and_power_over_1000_trials() -> None:
    rng = random.Random(0)
    n = items_needed(DELTA, DISCORDANT, ALPHA, POWER)  # the size the gate reports as sufficient
    assert detectable_effect(n, DISCORDANT, ALPHA, POWER) <= DELTA
    false_blocks = sum(mcnemar(*trial(rng, n, 0.0), ALPHA).p_value <= ALPHA for _ in range(1000))
    caught = sum(mcnemar(*trial(rng, n, DELTA), ALPHA).p_value <= ALPHA for _ in range(1000))
    assert false_blocks / 1000 <= ALPHA + 0.015
    assert caught / 1000 >= POWER


def test_bootstrap_false_block_rate_and_power() -> None:
    rng = random.Random(1)
    n = items_needed(DELTA, DISCORDANT, ALPHA, POWER)
    false_blocks = sum(
        paired_bootstrap(*trial(rng, n, 0.0), ALPHA, iters=400, seed=i).p_value <= ALPHA for i in range(300)
    )
    caught = sum(
        paired_bootstrap(*trial(rng, n, DELTA), ALPHA, iters=1000, seed=i).p_value <= ALPHA for i in range(1000)
    )
    assert false_blocks / 1000 <= ALPHA + 0.015
    assert caught / 1000 >= POWER


def test_identical_outcomes_never_block() -> None:
    same = [1.0, 0.0, 1.0, 1.0]
    assert mcnemar(same, same, ALPHA).p_value == 1.0
    assert mcnemar([0.0] * 10, [1.0] * 10, ALPHA).p_value == 2**-10


def test_holm_steps_down() -> None:
    levels = holm({"a": 0.001, "b": 0.02, "c": 0.04}, 0.05)
    assert levels == {"a": 0.05 / 3, "b": 0.05 / 2, "c": 0.05}
    levels = holm({"a": 0.001, "b": 0.03, "c": 0.04}, 0.05)
    assert levels["b"] == 0.025 and levels["c"] == 0.0  # b is not rejected, so c cannot be
