"""The gate's statistics on synthetic per-item outcomes: false blocks at most alpha, power where promised."""

import math
import random
from statistics import NormalDist

import numpy as np
import pytest
from shipyard.evals.stats import detectable_effect, holm, items_needed, mcnemar, paired_bootstrap

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
    assert {k: r for k, (r, _) in holm({"a": 0.001, "b": 0.02, "c": 0.04}, 0.05).items()} == dict.fromkeys("abc", True)
    corrected = holm({"a": 0.001, "b": 0.03, "c": 0.04}, 0.05)
    assert corrected["a"][0] and not corrected["b"][0] and not corrected["c"][0]  # b is not rejected, so c cannot be
    assert corrected["b"][1] == pytest.approx(0.06) and corrected["c"][1] == pytest.approx(0.06)
    assert holm({}, 0.05) == {}


# The hand-written versions these replaced (exact sum of binomial terms, step-down levels, the z formula):
# the library calls must give the same answers.


def former_mcnemar_p(b: int, discordant: int) -> float:
    return sum(math.comb(discordant, k) for k in range(b, discordant + 1)) / 2**discordant if discordant else 1.0


def former_holm_rejects(p_values: dict[str, float], alpha: float) -> dict[str, bool]:
    rejected, stopped = {}, False
    for rank, (name, p) in enumerate(sorted(p_values.items(), key=lambda item: item[1])):
        level = 0.0 if stopped else alpha / (len(p_values) - rank)
        rejected[name] = p <= level
        stopped = stopped or p > level
    return rejected


def former_z(alpha: float, power: float) -> float:
    return NormalDist().inv_cdf(1 - alpha) + NormalDist().inv_cdf(power)


def test_the_library_statistics_give_the_former_hand_written_answers() -> None:
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(1, 400)
        champion = [float(rng.random() < 0.6) for _ in range(n)]
        candidate = [c if rng.random() < 0.8 else 1 - c for c in champion]
        test = mcnemar(candidate, champion, ALPHA)
        assert test.p_value == pytest.approx(former_mcnemar_p(test.regressed, test.regressed + test.improved), rel=1e-9)
    for _ in range(60):  # statsmodels' multipletests runs gc.collect() on every call: ~70 ms here
        p_values = {f"t{i}": rng.random() ** 3 for i in range(rng.randint(1, 8))}
        assert {k: r for k, (r, _) in holm(p_values, ALPHA).items()} == former_holm_rejects(p_values, ALPHA)
    for spread in (0.02, 0.1, 0.25, 0.7):
        for alpha, power in ((0.05, 0.8), (0.01, 0.9), (0.1, 0.5)):
            z = former_z(alpha, power)
            for delta in (0.01, 0.03, 0.05, 0.1):
                assert items_needed(delta, spread, alpha, power) == math.ceil(z**2 * spread / delta**2 + 1 / delta)
            for n in (10, 174, 5000):
                assert detectable_effect(n, spread, alpha, power) == pytest.approx(z * math.sqrt(spread / n), rel=1e-12)


def test_the_bootstrap_agrees_with_the_former_resampling_within_monte_carlo_error() -> None:
    rng = random.Random(3)
    for seed in range(20):
        candidate = [rng.random() for _ in range(150)]
        champion = [x + rng.gauss(0.02, 0.2) for x in candidate]
        new = paired_bootstrap(candidate, champion, ALPHA, iters=4000, seed=seed)
        diffs = np.asarray(candidate) - np.asarray(champion)
        means = np.sort(
            diffs[np.random.default_rng(seed).integers(0, len(diffs), size=(4000, len(diffs)))].mean(axis=1)
        )
        former_p = (1 + np.count_nonzero(means - diffs.mean() <= diffs.mean())) / 4001
        assert abs(new.p_value - former_p) < 0.02
        assert new.interval[0] == pytest.approx(means[int(ALPHA * 3999)], abs=0.01)
        assert new.interval[1] == pytest.approx(means[int((1 - ALPHA) * 3999)], abs=0.01)
        assert new.estimate == pytest.approx(diffs.mean())


def test_exact_mcnemar_at_eight_thousand_discordant_pairs() -> None:
    test = mcnemar([0.0] * 4100 + [1.0] * 3900, [1.0] * 4100 + [0.0] * 3900, ALPHA)  # the old sum took ~50 s here
    assert test.regressed == 4100 and 0.01 < test.p_value < 0.02
