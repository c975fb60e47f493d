"""Bench: a post-training stage across 2 processes (the pipeline's own `accelerate launch`) against 1 process.

Same recipe (the demo's preference stage), same checkpoint (the demo's tiny model), a fresh home each run so
nothing is cached. The 1-process stage runs as `shipyard posttrain` in a fresh process, so both sides pay the
interpreter and the imports; the 2-process stage is `shipyard.posttraining.launch.run`, what the pipeline calls
with `pipeline.posttrain_processes: 2` (gloo ranks on a CPU). The launch overhead is the 2-process time of a
1-step recipe minus the 1-process time of the same recipe. Medians of 3.
Run: `.venv/bin/python bench/launch.py` (about 80 s on 2 cores; nothing else running).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shipyard.demo.tiny import build_tiny_model
from shipyard.posttraining import launch

RUNS = 3
DATA = Path(__file__).resolve().parents[1] / "shipyard/demo/recipes/data/arithmetic_preferences.train.jsonl"


def recipe(directory: Path, steps: int) -> Path:
    path = directory / f"recipe-{steps}.yaml"
    path.write_text(
        "stages:\n"
        f"  - {{name: preference, method: dpo, dataset: {DATA}, learning_rate: 5.0e-4,\n"
        f"     max_steps: {steps}, batch_size: 16, max_length: 64}}\n"
    )
    return path


def one_process(checkpoint: Path, recipe_file: Path, home: Path) -> float:
    command = [sys.executable, "-m", "shipyard.app.cli", "posttrain", "--checkpoint", str(checkpoint)]
    command += ["--recipe", str(recipe_file), "--json"]
    began = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=os.environ | {"SHIPYARD_HOME": str(home)})
    return time.perf_counter() - began


def two_processes(checkpoint: Path, recipe_file: Path, home: Path) -> float:
    began = time.perf_counter()
    launch.run(2, checkpoint, recipe_file, home)
    return time.perf_counter() - began


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint = build_tiny_model(root / "model")
        rows = []
        for steps in (1, 40):
            made = recipe(root, steps)
            times = {"1 process": [], "2 processes": []}  # type: dict[str, list[float]]
            for run in range(RUNS):
                times["1 process"].append(one_process(checkpoint, made, root / f"h1-{steps}-{run}"))
                times["2 processes"].append(two_processes(checkpoint, made, root / f"h2-{steps}-{run}"))
            rows.append((steps, statistics.median(times["1 process"]), statistics.median(times["2 processes"])))
    print("| DPO steps | 1 process (s) | 2 processes (s) | ratio |")
    print("| --- | --- | --- | --- |")
    for steps, one, two in rows:
        print(f"| {steps} | {one:.1f} | {two:.1f} | {two / one:.2f} |")
    print(f"\nlaunch overhead (2 processes minus 1 process, 1 step): {rows[0][2] - rows[0][1]:.1f} s")


if __name__ == "__main__":
    main()
