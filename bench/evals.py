"""Bench: the eval stage against the `lm_eval` command on the same model and tasks, and a champion cache hit.

The model is a checkpoint of a short demo RL run. Shipyard: `shipyard eval`
with the built-in capability and safety suites (one process, the model loaded
once). Peer: the `lm_eval run` command once per suite, as one would run it by
hand (one call cannot take both: each suite's relative data paths resolve
against the command's working directory). Then `shipyard eval` again on the
same model: the cache hit a champion costs on every gate. Each is a fresh
process, timed by wall clock; 3 rounds, medians.
Run: `.venv/bin/python bench/evals.py` (about three minutes).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shipyard.demo.rl_run import run_demo
from shipyard.settings import DemoSettings

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SUITES = {
    "capability": (ROOT / "evals" / "tasks", "shipyard_arithmetic_heldout,shipyard_arithmetic_choice"),
    "safety": (ROOT / "safety" / "tasks", "shipyard_refusal_harmful,shipyard_refusal_benign"),
}
ROUNDS = 3


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def lm_eval(model: Path, tasks: str, out: Path, include: Path) -> list[str]:
    return [
        *(str(BIN / "lm_eval"), "run", "--model", "hf", "--model_args", f"pretrained={model}", "--device", "cpu"),
        *("--batch_size", "64", "--tasks", tasks, "--apply_chat_template", "--seed", "0", "--output_path", str(out)),
        *("--include_path", str(include)),
    ]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        run_demo(DemoSettings(out=tmp / "run", steps=10, save_every=10), progress=False)
        model = tmp / "run" / "checkpoint-10"
        ours, cached, per_suite = [], [], []
        for i in range(ROUNDS):
            home = tmp / f"home{i}"
            shipyard = [
                str(BIN / "shipyard"),
                "eval",
                "--model",
                str(model),
                "--suite",
                "capability",
                "--suite",
                "safety",
            ]
            ours.append(timed([*shipyard, "--json"], cwd=tmp))
            cached.append(timed([*shipyard, "--json"], cwd=tmp))
            (tmp / ".shipyard").rename(home)
            # lm_eval resolves the tasks' relative data paths against its working directory: run it in the task folder.
            per_suite.append(sum(timed(lm_eval(model, t, tmp / "out", d), cwd=d) for d, t in SUITES.values()))
    result = {
        "shipyard_eval_s": statistics.median(ours),
        "lm_eval_per_suite_s": statistics.median(per_suite),
        "shipyard_cache_hit_s": statistics.median(cached),
    }
    result["ratio_vs_per_suite"] = result["shipyard_eval_s"] / result["lm_eval_per_suite_s"]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
