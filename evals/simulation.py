"""Streams of releases, simulated item by item, to measure a gate's error rates over a whole line.

Each of `items` eval items has a difficulty shared by every model of a stream, and each model a per-item noise;
a model answers an item right when difficulty plus noise clears the bar its true accuracy sets (a normal
threshold model). A release's noise is its champion's, kept with correlation `rho` (0.8: consecutive checkpoints
answer about 86% of items alike, as the gate's paired tests assume; releases far apart about 68%). So a model's
expected eval score is its true accuracy, and two models differ item by item as far as they are apart. Two gates
decide every release of every stream at once:

- per release: McNemar's exact one-sided test at alpha against the champion (today's regression check);
- stream: e-LOND over the betting e-values (`shipyard.evals.stream`), plus the guard against the first
  champion (the baseline) at margin delta.

A candidate a gate lets through becomes that gate's champion. Reported per gate: which releases were blocked
(by e-LOND, by the guard) and each stream's final champion's true accuracy. Pure numpy and scipy; called by
`bench/stream.py` and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from shipyard.evals.stream import e_value, level


@dataclass(frozen=True)
class Outcome:
    """One gate over many streams."""

    blocked: np.ndarray  # streams x releases, bool
    guarded: np.ndarray  # streams x releases: blocked by the guard (the stream gate only)
    final: np.ndarray  # each stream's last champion's true accuracy

    def block_rate(self) -> float:
        return float(self.blocked.mean())

    def any_block(self) -> float:
        return float(self.blocked.any(axis=1).mean())


def simulate(
    truth: np.ndarray,
    streams: int = 1000,
    items: int = 200,
    rho: float = 0.8,
    alpha: float = 0.05,
    delta: float = 0.1,
    seed: int = 0,
) -> dict[str, Outcome]:
    """Run both gates on `streams` streams; the first champion's true accuracy is `truth[0]`, the t-th
    candidate's `truth[t]`."""
    from scipy.stats import binom

    rng = np.random.default_rng(seed)
    releases = len(truth) - 1
    difficulty = rng.normal(0, 1, (streams, items))
    noise0 = rng.normal(0, 1, (streams, items))
    baseline = _answers(difficulty, noise0, truth[0])
    z = NormalDist().inv_cdf(1 - alpha)
    outcomes = {}
    for gate in ("per release", "stream"):
        gen = np.random.default_rng(seed + 1)  # both gates see the same candidates while they agree
        noise, champion, quality = noise0.copy(), baseline.copy(), np.full(streams, float(truth[0]))
        blocked, guarded = np.zeros((streams, releases), bool), np.zeros((streams, releases), bool)
        rejections = np.zeros(streams, int)
        for t in range(releases):
            drawn = rho * noise + np.sqrt(1 - rho**2) * gen.normal(0, 1, noise.shape)
            candidate = _answers(difficulty, drawn, truth[t + 1])
            b = (champion & ~candidate).sum(axis=1)  # right -> wrong
            c = (~champion & candidate).sum(axis=1)
            if gate == "per release":
                stop = binom.sf(b - 1, b + c, 0.5) <= alpha
            else:
                levels = np.array([level(alpha, t + 1, int(r)) for r in rejections])
                rejected = e_value(b, c) * levels >= 1
                rejections += rejected
                diff = candidate.astype(float) - baseline
                estimate = diff.mean(axis=1)
                spread = np.maximum((diff != 0).mean(axis=1) - estimate**2, 0)
                guarded[:, t] = estimate - z * np.sqrt(spread / items) < -delta
                stop = rejected | guarded[:, t]
            blocked[:, t] = stop
            keep = ~stop
            noise[keep], champion[keep], quality[keep] = drawn[keep], candidate[keep], truth[t + 1]
        outcomes[gate] = Outcome(blocked, guarded, quality)
    return outcomes


def _answers(difficulty: np.ndarray, noise: np.ndarray, accuracy: float) -> np.ndarray:
    """Right where difficulty plus noise clears the bar that gives `accuracy` in expectation."""
    bar = -np.sqrt(2) * NormalDist().inv_cdf(float(accuracy))
    return difficulty + noise > bar
