"""The gate over a stream of releases: anytime-valid evidence per release, online error control over the line,
and a cumulative guard against a baseline release.

Per release, a betting e-value against "no regression" from McNemar's discordant pairs: of the items the
candidate and its champion answer differently, b went right → wrong and c wrong → right. Under no regression a
discordant item is a regression with probability at most 1/2, so for each bet lambda in [0, 1) the
product (1 + lambda)^b (1 - lambda)^c has expectation at most 1; the e-value is the average over a fixed grid
of bets (an average of e-values is one), so no bet is tuned on the data. A release's e-value is the mean of its
tasks' (valid for "no regression on any task").

Over the line, e-LOND (Xu & Ramdas, "Online multiple testing with e-values", AISTATS 2024): the t-th gate
decision blocks when its e-value reaches 1 / alpha_t, alpha_t = alpha gamma_t (R + 1), R the blocks before it
and gamma the LORD++ default sequence (Javanmard & Montanari 2018; Ramdas et al. 2017), which sums to 1 (slowly:
a fifth of alpha by the 100th decision, so early decisions get the most). The false-block rate over
the whole stream (FDR, and so the chance of any false block when nothing changes) stays at most alpha, whatever the
dependence between releases; each decision records the level it used and the share of alpha not yet allotted.

The guard: the candidate is compared item by item with a baseline release (by default the first on stable) and
passes only when the one-sided (1 - alpha) lower bound of (candidate - baseline) is at least -delta, so many small
steps cannot add up to a drop of more than delta. No library implements e-LOND over e-values (`online-fdr` has
LOND over p-values, `expectation` e-BH and e-Holm offline): the formulas are these few lines, checked in tests
against the published sequence and by simulation. Pure functions; numpy arrays are accepted where the bench
simulates many streams at once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from shipyard.evals.stats import paired_test

BETS = np.arange(1, 20) / 20  # lambda = 0.05 … 0.95
LORD_CONSTANT = 0.07720838  # makes the LORD++ default gamma sum to 1 (Javanmard & Montanari 2018, eq. 31)


def gamma(t: int) -> float:
    """gamma_t, the t-th term (t ≥ 1) of the LORD++ default sequence."""
    return LORD_CONSTANT * math.log(max(t, 2)) / (t * math.exp(math.sqrt(math.log(t))))


def allotted(t: int) -> float:
    """gamma_1 + … + gamma_t: the share of alpha that decisions 1..t were given (before rejections multiply it)."""
    return sum(gamma(s) for s in range(1, t + 1))


def e_value(regressed: Any, improved: Any) -> Any:
    """The mixture betting e-value against "no regression", from b items right → wrong and c wrong → right
    (arrays of counts give an array of e-values)."""
    b, c = np.asarray(regressed, dtype=float)[..., None], np.asarray(improved, dtype=float)[..., None]
    return np.exp(b * np.log1p(BETS) + c * np.log1p(-BETS)).mean(axis=-1)


def level(alpha: float, t: int, blocks_before: int) -> float:
    """alpha_t of e-LOND: the t-th decision blocks when its e-value is at least 1 / alpha_t."""
    return alpha * gamma(t) * (blocks_before + 1)


@dataclass(frozen=True)
class Position:
    """Where the next gate decision falls in its line's stream: its number, and how many e-LOND blocked before."""

    t: int = 1
    blocks_before: int = 0
    line: str = ""  # the release line the stream is of; each record names it, so none counts in another line

    @classmethod
    def after(cls, recorded: list[Any], line: str = "") -> Position:
        """The next decision's place, from the stream checks the line's ledger recorded (`StreamCheck.as_dict()`;
        anything else is not counted, nor a second record of the same decision t)."""
        checks: dict[Any, dict[str, Any]] = {}
        for r in recorded:
            if isinstance(r, dict) and isinstance(r.get("blocked"), bool):
                checks.setdefault(r.get("t"), r)
        return cls(len(checks) + 1, sum(1 for r in checks.values() if r["blocked"]), line)


@dataclass(frozen=True)
class StreamCheck:
    """One gate decision's place in the line's stream (what the ledger records with it)."""

    t: int  # this is the line's t-th gate decision
    e_value: float
    level: float  # alpha_t
    blocked: bool
    blocks_before: int
    budget_left: float  # alpha times (1 - gamma_1 - … - gamma_t): the share of alpha not yet allotted
    line: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def stream_check(e: float, alpha: float, t: int, blocks_before: int, line: str = "") -> StreamCheck:
    at = level(alpha, t, blocks_before)
    return StreamCheck(t, e, at, e * at >= 1, blocks_before, alpha * max(1 - allotted(t), 0.0), line)


@dataclass(frozen=True)
class Guard:
    """The candidate against the baseline on one task: it passes when it is not more than delta below it."""

    estimate: float  # candidate minus baseline, per item
    lower: float  # one-sided (1 - alpha) lower bound
    passed: bool
    items: int


def guard(candidate: list[float], baseline: list[float], delta: float, alpha: float, iters: int = 2000) -> Guard:
    test = paired_test(candidate, baseline, alpha, iters)
    return Guard(test.estimate, test.interval[0], test.interval[0] >= -delta, len(candidate))
