"""The demo RL run: real GRPO training on the CPU, checkpoints as transformers writes them."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from shipyard.demo_run import run_demo
from shipyard.errors import DemoRunError
from shipyard.settings import DemoSettings
from shipyard.sources import open_source
from shipyard.watch import Checkpoint, scan

CHECKPOINT_FILES = {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "trainer_state.json"}


def short(out: Path, **overrides: object) -> DemoSettings:
    values: dict[str, object] = {"out": out, "steps": 6, "save_every": 2, "warmup_steps": 5, "heldout_size": 20}
    return DemoSettings.model_validate(values | overrides)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Checkpoint], list[dict[str, float]]]:
    """The default demo run through the CLI, scanned by the watcher while it writes."""
    out = tmp_path_factory.mktemp("demo") / "run"
    cache = tmp_path_factory.mktemp("cache")
    cmd = [sys.executable, "-m", "shipyard.cli", "demo-run", "--out", str(out), "--save-every", "20", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen: list[Checkpoint] = []
    while proc.poll() is None:
        if out.exists():
            seen += scan(open_source(str(out)), cache)
        time.sleep(0.5)
    stdout = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode == 0, stdout
    return out, seen, json.loads(stdout)


@pytest.mark.slow
def test_checkpoints_appear_in_order_with_complete_files_and_metrics(full_run: tuple) -> None:
    out, seen, reported = full_run
    steps = [r["step"] for r in reported]
    assert steps == list(range(20, 301, 20))
    complete = list(dict.fromkeys(c.step for c in seen if c.state == "complete"))  # in order of first sight
    assert complete == sorted(complete) and len(complete) > 3 and set(complete) <= set(steps)
    assert not [c for c in seen if c.state == "invalid"], "a checkpoint being written was taken as invalid"
    for report in reported:
        files = {p.name for p in (out / f"checkpoint-{report['step']}").iterdir()}
        assert files >= CHECKPOINT_FILES
        assert {"reward", "kl", "mean_length", "heldout_accuracy"} <= set(report)


@pytest.mark.slow
def test_held_out_accuracy_rises_over_the_run(full_run: tuple) -> None:
    _, _, reported = full_run
    accuracy = [r["heldout_accuracy"] for r in reported]
    last_third = accuracy[-len(accuracy) // 3 :]
    assert sum(last_third) / len(last_third) > accuracy[0] + 0.05, accuracy
    assert max(accuracy) > accuracy[0] + 0.1, accuracy


@pytest.mark.slow
def test_keep_rotates_old_checkpoints_away(tmp_path: Path) -> None:
    reports = run_demo(short(tmp_path / "run", keep=2), progress=False)
    assert [r.step for r in reports] == [4, 6]
    assert not (tmp_path / "run" / "checkpoint-2").exists()


@pytest.mark.slow
def test_same_seed_gives_the_same_checkpoints(tmp_path: Path) -> None:
    a = run_demo(short(tmp_path / "a"), progress=False)
    b = run_demo(short(tmp_path / "b"), progress=False)
    assert [r.metrics for r in a] == [r.metrics for r in b]
    wa, wb = load_file(a[-1].path / "model.safetensors"), load_file(b[-1].path / "model.safetensors")
    assert all(wa[k].equal(wb[k]) for k in wa)


def test_refuses_a_directory_that_already_holds_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "run" / "checkpoint-10").mkdir(parents=True)
    with pytest.raises(DemoRunError, match="already holds checkpoints"):
        run_demo(short(tmp_path / "run"), progress=False)
