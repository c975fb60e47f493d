"""Bench: today's per-release gate against the stream gate (e-LOND + the guard), on 1,000 simulated streams of 100
releases each (`shipyard.evals.simulation`: a threshold model of per-item answers, consecutive releases answering
~86% of items alike; alpha 0.05, delta 0.1, true accuracy 0.6 at the start).

Scenarios: nothing changes; one release regresses by delta (at release 1, 10 or 50); every release drifts down by
delta/20. Reported: the share of releases blocked and of streams with any block when nothing changes, the chance
the regressing release is blocked (by e-LOND, by the guard), and the chance a stream ends more than delta below
its first champion. For 200 eval items (the demo's) and 1,000.

Run: `.venv/bin/python bench/stream.py` (about a minute).
"""

from __future__ import annotations

import numpy as np
from shipyard.evals.simulation import simulate

RELEASES, START, DELTA = 100, 0.6, 0.1


def main() -> None:
    print(
        "| items | gate | blocked, nothing changes | any block in 100, nothing changes |"
        " regression of delta blocked at release 1 / 10 / 50 (e-LOND's share) |"
        " ends > delta below after drift delta/20 a release |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for items in (200, 1000):
        null = simulate(np.full(RELEASES + 1, START), items=items)
        drift = simulate(START - DELTA / 20 * np.arange(RELEASES + 1), items=items)
        caught: dict[str, list[str]] = {gate: [] for gate in null}
        for at in (1, 10, 50):
            truth = np.full(RELEASES + 1, START)
            truth[at] = START - DELTA
            for gate, outcome in simulate(truth, items=items).items():
                blocked = outcome.blocked[:, at - 1]
                by_elond = (blocked & ~outcome.guarded[:, at - 1]).mean()
                caught[gate].append(f"{blocked.mean():.2f}" + (f" ({by_elond:.2f})" if gate == "stream" else ""))
        for gate in null:
            below = (drift[gate].final < START - DELTA - 1e-9).mean()
            print(
                f"| {items} | {gate} | {null[gate].block_rate():.3f} | {null[gate].any_block():.2f} |"
                f" {' / '.join(caught[gate])} | {below:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
