"""Bench: the watcher's disk over a simulated long run, with cache budgets against without.

A trainer writes N checkpoints of a small Llama model (distinct weights each
step, the trainer keeping only its newest 3, as `save_total_limit` does); after
each save the watcher polls the run (`watch_once`: list, select, snapshot,
validate) and takes the checkpoint through a stand-in for the pipeline that
writes what the real one leaves on disk — a candidate the size of the model
under `candidates/<key>/` with its lineage, and its `staging/` links — so the
budgets are exercised at hundreds of checkpoints in minutes. Once with budgets
of about 12 checkpoints per cache, once unbounded; the home's bytes on disk
(each inode once) after every poll, and the poll's time.
Run: `.venv/bin/python bench/disk.py [N]` (N = 300: about 3 minutes).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from shipyard.checkpoints import Checkpoint
from shipyard.demo.tiny import TinyModelSpec, build_tiny_model
from shipyard.orchestration.pipeline import Outcome
from shipyard.orchestration.watcher import watch_once
from shipyard.settings import Settings

KEEP_IN_RUN = 3


def disk_bytes(path: Path) -> int:
    seen: dict[int, int] = {}
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            info = os.lstat(os.path.join(root, name))
            seen[info.st_ino] = info.st_blocks * 512
    return sum(seen.values())


def save_step(run: Path, base: Path, weights: dict[str, torch.Tensor], step: int) -> None:
    ckpt = run / f"checkpoint-{step}"
    shutil.copytree(base, ckpt, ignore=shutil.ignore_patterns("model.safetensors"))
    save_file({k: v + step * 1e-4 for k, v in weights.items()}, ckpt / "model.safetensors", metadata={"format": "pt"})
    (ckpt / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": step, "reward": 0.5}]}))
    for old in sorted(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[:-KEEP_IN_RUN]:
        shutil.rmtree(old)


def take(home: Path) -> object:
    """What the pipeline leaves behind for one checkpoint: a candidate and its staging, then released."""

    def run(checkpoint: Checkpoint) -> Outcome:
        key = hashlib.sha256(checkpoint.digest.encode()).hexdigest()
        entry = home / "candidates" / key
        entry.mkdir(parents=True)
        shutil.copyfile(Path(checkpoint.path) / "model.safetensors", entry / "model.safetensors")
        (entry / "lineage.json").write_text(json.dumps({"checkpoint_digest": checkpoint.digest}))
        (home / "staging" / key).mkdir(parents=True)
        os.link(entry / "model.safetensors", home / "staging" / key / "model.safetensors")
        return Outcome(checkpoint.step, checkpoint.uri, "released", "", checkpoint.step)

    return run


def simulate(tmp: Path, base: Path, steps: int, budget: int | None) -> dict[str, float]:
    run, home = tmp / "run", tmp / "home"
    weights = load_file(base / "model.safetensors")
    cache = {"keep_recent_seconds": 0} | ({k: budget for k in ("snapshots", "candidates", "staging")} if budget else {})
    settings = Settings(home=home, watch={"source": str(run)}, cache=cache)  # type: ignore[arg-type]
    peak, polls = 0, []
    for step in range(1, steps + 1):
        save_step(run, base, weights, step)
        start = time.perf_counter()
        [outcome] = watch_once(settings, take=take(home))  # type: ignore[arg-type]
        polls.append(time.perf_counter() - start)
        assert outcome.state == "released", outcome
        peak = max(peak, disk_bytes(home))
    final = disk_bytes(home)
    shutil.rmtree(run)
    shutil.rmtree(home)
    polls.sort()
    return {"peak": peak, "final": final, "median_poll": polls[len(polls) // 2], "max_poll": polls[-1]}


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp_dir:
        tmp = Path(tmp_dir)
        base = build_tiny_model(tmp / "base", TinyModelSpec())
        per_checkpoint = (base / "model.safetensors").stat().st_size
        budget = 12 * per_checkpoint
        bounded = simulate(tmp, base, steps, budget)
        unbounded = simulate(tmp, base, steps, None)
    mb = 1e6
    print(f"{steps} checkpoints of {per_checkpoint / mb:.1f} MB; budget {budget / mb:.1f} MB per cache (3 caches)")
    print("| caches | peak home | final home | median poll | slowest poll |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in (("budgets", bounded), ("unbounded", unbounded)):
        print(
            f"| {name} | {r['peak'] / mb:.0f} MB | {r['final'] / mb:.0f} MB "
            f"| {r['median_poll'] * 1e3:.0f} ms | {r['max_poll'] * 1e3:.0f} ms |"
        )


if __name__ == "__main__":
    main()
