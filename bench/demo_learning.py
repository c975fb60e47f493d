"""Bench: does the demo RL run learn, with margin, across seeds and thread counts?

Runs `shipyard demo-run --json` once per (seed, threads) in a child process
(`--threads` sets `demo.threads`, the CPU threads the run is pinned to) and
prints held-out accuracy of the warm start (step 0), at the first checkpoint,
the mean of the last third and the best, with the gains over the warm start
that `tests/test_demo_run.py` asserts with margin. Run:
`.venv/bin/python bench/demo_learning.py [--seeds 0 1 2 3 4] [--threads 1 2] [--steps 300]`
(about a minute per run on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shipyard.intake.trainer_state import metrics_at, read_trainer_state


def one(seed: int, threads: int, steps: int, save_every: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "shipyard.app.cli", "demo-run", "--out", str(out), "--json"]
        cmd += ["--seed", str(seed), "--steps", str(steps), "--save-every", str(save_every)]
        env = os.environ | {"SHIPYARD_DEMO__THREADS": str(threads)}
        started = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - started
        reports = json.loads(done.stdout)
        state = read_trainer_state(Path(reports[-1]["path"]) / "trainer_state.json")
    accuracy = [float(r["heldout_accuracy"]) for r in reports]
    last_third = accuracy[-len(accuracy) // 3 :]
    return {
        "seed": seed,
        "threads": threads,
        "seconds": round(seconds, 1),
        "warm_start": metrics_at(state, 0)["heldout_accuracy"],
        "first": accuracy[0],
        "last_third_mean": round(statistics.mean(last_third), 3),
        "best": max(accuracy),
        "accuracy": accuracy,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--save-every", type=int, default=20)
    args = parser.parse_args()
    rows = [one(s, t, args.steps, args.save_every) for t in args.threads for s in args.seeds]
    print(
        "| seed | threads | warm start | first checkpoint | last third | best | last third - warm | best - warm | s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        gain, best_gain = r["last_third_mean"] - r["warm_start"], r["best"] - r["warm_start"]  # type: ignore[operator]
        print(
            f"| {r['seed']} | {r['threads']} | {r['warm_start']:.3f} | {r['first']:.3f} | {r['last_third_mean']:.3f}"
            f" | {r['best']:.3f} | {gain:+.3f} | {best_gain:+.3f} | {r['seconds']} |"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
