"""The stream gate's statistics: the published gamma sequence, e-values that are e-values, e-LOND's error over a
stream, the guard, and the per-release gate beside it, on small simulations with fixed seeds."""

import math

import numpy as np
import pytest
from scipy.stats import binom
from shipyard.evals.simulation import simulate
from shipyard.evals.stream import allotted, e_value, gamma, guard, level, stream_check


def test_gamma_is_the_lord_plus_plus_default_and_never_allots_more_than_alpha() -> None:
    # onlineFDR's default: 0.07720838 * log(max(j, 2)) / (j * exp(sqrt(log(j))))
    assert gamma(1) == pytest.approx(0.07720838 * math.log(2))
    assert gamma(10) == pytest.approx(0.07720838 * math.log(10) / (10 * math.exp(math.sqrt(math.log(10)))))
    assert all(gamma(t) > gamma(t + 1) for t in range(2, 500))
    assert allotted(100) == pytest.approx(0.2076, abs=1e-4) and allotted(100_000) < 1
    check = stream_check(e=400.0, alpha=0.05, t=1, blocks_before=0)
    assert check.blocked and check.level == pytest.approx(0.05 * gamma(1))  # 400 >= 1 / 0.002676 = 373.7
    assert not stream_check(e=400.0, alpha=0.05, t=2, blocks_before=0).blocked
    assert level(0.05, 2, 3) == pytest.approx(4 * level(0.05, 2, 0))  # each block earlier raises the level
    assert check.budget_left == pytest.approx(0.05 * (1 - gamma(1)))


@pytest.mark.parametrize("discordant", [1, 10, 40, 200])
def test_the_betting_e_value_has_expectation_one_with_no_regression_and_less_with_an_improvement(
    discordant: int,
) -> None:
    regressed = np.arange(discordant + 1)
    for p, bound in ((0.5, pytest.approx(1.0)), (0.4, None)):
        expectation = float((binom.pmf(regressed, discordant, p) * e_value(regressed, discordant - regressed)).sum())
        assert expectation == bound if bound is not None else expectation < 1
    assert float(e_value(30, 10)) > 50 and float(e_value(10, 30)) < 0.1  # evidence grows with right → wrong flips


def test_with_nothing_changing_e_lond_blocks_no_stream_and_the_per_release_gate_blocks_alpha_of_releases() -> None:
    null = simulate(np.full(51, 0.6), streams=400, items=200, delta=1.0, seed=3)  # delta 1: the guard never blocks
    assert null["stream"].any_block() <= 0.05  # e-LOND: over the whole stream, at most alpha
    assert 0.02 <= null["per release"].block_rate() <= 0.08  # alpha per release...
    assert null["per release"].any_block() > 0.8  # ...which over 50 releases blocks nearly every stream


def test_the_guard_stops_a_slow_drift_that_every_per_release_test_lets_through() -> None:
    drift = simulate(0.6 - 0.005 * np.arange(61), streams=300, items=1000, seed=4)
    ends_below = {gate: float((o.final < 0.5 - 1e-9).mean()) for gate, o in drift.items()}
    assert ends_below["per release"] > 0.3 and ends_below["stream"] < 0.15, ends_below
    regressed = np.full(11, 0.6)
    regressed[5] = 0.5
    caught = simulate(regressed, streams=300, items=1000, seed=5)
    assert caught["stream"].blocked[:, 4].mean() > 0.95


def test_the_guard_passes_within_delta_of_the_baseline_and_blocks_beyond() -> None:
    base = [1.0] * 600 + [0.0] * 400
    same = guard(base, base, delta=0.1, alpha=0.05)
    assert same.passed and same.estimate == 0 and same.items == 1000
    lost = guard([0.0] * 200 + base[200:], base, delta=0.1, alpha=0.05)  # 0.2 below the baseline
    assert not lost.passed and lost.lower < -0.1
