"""Statistics of the release gate: paired regression tests, Holm's correction, and minimum detectable effects.

A candidate and its champion answer the same items, so they are compared item
by item. For a binary metric the test is an exact one-sided McNemar test on
the discordant items: b items the champion got right and the candidate wrong,
c the other way; with no regression, b ~ Binomial(b + c, 1/2). Other metrics
use a paired bootstrap of the per-item differences. Both ask "is the
candidate worse?" (one-sided): a no-change candidate is blocked with
probability at most alpha. The margin delta is the regression the gate must
catch: a suite is big enough when the test has the configured power (0.8)
against a drop of delta, and the gate reports each suite's minimum detectable
effect at its size. Pure functions; used by `evals.gate`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class PairedTest:
    estimate: float  # mean candidate minus champion (negative: a regression)
    p_value: float  # one-sided, against "no regression"
    interval: tuple[float, float]  # two-sided 1 - 2*alpha interval of the estimate (one-sided bound at each end)
    regressed: int  # items right (or better) for the champion and not for the candidate
    improved: int


def mcnemar(candidate: Sequence[float], champion: Sequence[float], alpha: float) -> PairedTest:
    """Exact one-sided McNemar test on paired binary outcomes (1 = right): scipy's exact binomial test."""
    from scipy.stats import binomtest

    b = sum(1 for x, y in zip(candidate, champion, strict=True) if y > x)
    c = sum(1 for x, y in zip(candidate, champion, strict=True) if x > y)
    n = len(candidate)
    discordant = b + c
    p_value = float(binomtest(b, discordant, 0.5, alternative="greater").pvalue) if discordant else 1.0
    estimate = (c - b) / n
    half = NormalDist().inv_cdf(1 - alpha) * math.sqrt(max(discordant / n - estimate**2, 0.0) / n)
    return PairedTest(estimate, p_value, (estimate - half, estimate + half), b, c)


def paired_bootstrap(
    candidate: Sequence[float], champion: Sequence[float], alpha: float, iters: int = 2000, seed: int = 0
) -> PairedTest:
    """One-sided paired bootstrap test of the mean difference (H0: no regression), by `scipy.stats.bootstrap`."""
    from scipy.stats import bootstrap

    diffs = np.asarray(candidate, dtype=float) - np.asarray(champion, dtype=float)
    mean = float(diffs.mean())
    result = bootstrap(
        (diffs,),
        np.mean,
        n_resamples=iters,
        confidence_level=1 - 2 * alpha,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    means = result.bootstrap_distribution
    # Under H0 the differences are centred at 0: how often is a centred resample as low as what we saw?
    p_value = float((1 + np.count_nonzero(means - mean <= mean)) / (iters + 1))
    low, high = result.confidence_interval
    return PairedTest(mean, p_value, (float(low), float(high)), int((diffs < 0).sum()), int((diffs > 0).sum()))


def paired_test(candidate: Sequence[float], champion: Sequence[float], alpha: float, iters: int = 2000) -> PairedTest:
    """McNemar's exact test when every value is 0 or 1, else the paired bootstrap."""
    if all(v in (0.0, 1.0) for v in (*candidate, *champion)):
        return mcnemar(candidate, champion, alpha)
    return paired_bootstrap(candidate, champion, alpha, iters=iters)


def spread(candidate: Sequence[float], champion: Sequence[float], estimate: float, assumed: float) -> float:
    """The variance of one item's difference (the discordant share, for a binary metric); `assumed` when the
    pairs show none yet (two models that agree on every item say nothing about how often they would not)."""
    diffs = [a - b for a, b in zip(candidate, champion, strict=True)]
    observed = sum(d * d for d in diffs) / len(diffs) - estimate**2 if diffs else 0.0
    return observed if observed > 0 else assumed


def holm(p_values: dict[str, float], alpha: float) -> dict[str, tuple[bool, float]]:
    """Holm's step-down correction (statsmodels): per test, whether it is rejected and its adjusted p-value."""
    from statsmodels.stats.multitest import multipletests

    if not p_values:
        return {}
    names = list(p_values)
    rejected, adjusted, _, _ = multipletests([p_values[n] for n in names], alpha=alpha, method="holm")
    return {name: (bool(r), float(a)) for name, r, a in zip(names, rejected, adjusted, strict=True)}


def _items_at_unit_drop(spread: float, alpha: float, power: float) -> float:
    """Paired items to catch a drop of 1 with a one-sided z-test (statsmodels' closed form)."""
    from statsmodels.stats.power import normal_sample_size_one_tail

    return float(normal_sample_size_one_tail(1.0, power, alpha, std_null=math.sqrt(spread)))


def detectable_effect(n: int, spread: float, alpha: float, power: float) -> float:
    """Smallest drop a one-sided test at `alpha` catches with `power` on `n` paired items.

    `spread` is the variance of one item's difference: the discordant share for
    a binary metric (McNemar), the variance of the differences otherwise.
    """
    return math.sqrt(_items_at_unit_drop(spread, alpha, power) / n) if n else math.inf


def items_needed(delta: float, spread: float, alpha: float, power: float) -> int:
    """Paired items a suite needs to catch a drop of `delta` with `power`.

    The normal approximation plus a continuity correction of 1/delta items,
    which the exact test's and the bootstrap's discreteness cost.
    """
    return math.ceil(_items_at_unit_drop(spread, alpha, power) / delta**2 + 1 / delta)
