"""Checkpoints through the whole pipeline on the tiny model: released once, screened out, or failed by the gate."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shipyard.intake.scan import scan
from shipyard.intake.sources import open_source
from shipyard.orchestration.pipeline import SCREEN_SUFFIX, champion, release_checkpoint, screen
from shipyard.registry.ledger import Ledger
from shipyard.registry.publish import promote
from shipyard.registry.stores import release_store
from shipyard.settings import Settings

from .corpus import HOSTILE, write_hostile

pytestmark = pytest.mark.slow


def shipyard(home: Path, *args: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    """The `shipyard` command in its own process, with a stdin that never ends: anything that reads it hangs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIPYARD_", "PREFECT_"))}
    read, write = os.pipe()
    try:
        command = [str(Path(sys.executable).parent / "shipyard"), *args]
        env |= {"SHIPYARD_HOME": str(home), "SHIPYARD_PROFILE": "demo", **env_extra}
        return subprocess.run(command, stdin=read, capture_output=True, text=True, env=env, timeout=900)
    finally:
        os.close(read)
        os.close(write)


@pytest.fixture(scope="module")
def hostile_run(
    rl_checkpoint: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, dict[str, int]]:
    """The short RL run's checkpoint at step 10, then every hostile checkpoint, newer."""
    run, outside = tmp_path_factory.mktemp("run"), tmp_path_factory.mktemp("outside")
    shutil.copytree(rl_checkpoint, run / "checkpoint-10")
    return run, outside / "payload-ran", write_hostile(run, outside, tiny_model_dir, first_step=11)


@pytest.fixture(scope="module")
def watched(hostile_run: tuple[Path, Path, dict[str, int]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home where one `shipyard watch --once` poll refused every hostile checkpoint and released step 10."""
    run, marker, _ = hostile_run
    home = tmp_path_factory.mktemp("home")
    first = shipyard(home, "watch", "--once", "--source", str(run), "--json")
    assert first.returncode == 0, first.stderr
    assert [(o["step"], o["state"], o["version"]) for o in json.loads(first.stdout)] == [(10, "released", 1)]
    again = shipyard(home, "watch", "--once", "--source", str(run), "--json")
    assert again.returncode == 0 and json.loads(again.stdout) == []  # decided: never taken twice
    assert not marker.exists()  # nothing a checkpoint held ran
    return home


def test_every_hostile_checkpoint_is_refused_in_the_ledger_with_its_reason(
    watched: Path, hostile_run: tuple[Path, Path, dict[str, int]]
) -> None:
    ledger = Ledger(release_store(Settings(home=watched)))
    refused = {
        e.data["step"]: e.data["reason"]
        for e in (ledger.event(n) for n in range(1, ledger.refresh().events + 1))
        if e.type == "refused"
    }
    for case, step in hostile_run[2].items():
        assert re.search(HOSTILE[case][1].replace("{ckpt}", f"checkpoint-{step}"), refused[step]), (case, refused)


def test_checkpoints_lists_the_run_and_validates_on_request(
    hostile_run: tuple[Path, Path, dict[str, int]], tmp_path: Path
) -> None:
    run, _, steps = hostile_run
    listed = shipyard(tmp_path, "checkpoints", "--source", str(run), "--json")
    assert listed.returncode == 0, listed.stderr
    states = {c["step"]: c["state"] for c in json.loads(listed.stdout)}
    assert states == dict.fromkeys([10, *steps.values()], "complete")
    assert not (tmp_path / "snapshots").exists()  # listing copies nothing
    validated = shipyard(tmp_path, "checkpoints", "--source", str(run), "--validate", "--json")
    assert validated.returncode == 0, validated.stderr
    seen = {c["step"]: c for c in json.loads(validated.stdout)}
    assert seen[10]["state"] == "complete" and seen[10]["digest"]
    for case, step in steps.items():
        assert seen[step]["state"] == "invalid", case
        assert re.search(HOSTILE[case][1].replace("{ckpt}", f"checkpoint-{step}"), seen[step]["reason"]), case


def test_watch_releases_the_run_once(watched: Path) -> None:
    state = Ledger(release_store(Settings(home=watched))).refresh()
    assert list(state.releases) == [("main", 1)]
    assert state.releases[("main", 1)].data["checkpoint_digest"]  # lineage reached the ledger


def test_rerun_screening_and_gate_record_their_reasons(watched: Path, rl_checkpoint: Path, tmp_path: Path) -> None:
    settings = Settings(home=watched)
    [checkpoint] = [c for c in scan(open_source(str(rl_checkpoint.parent)), tmp_path / "cache") if c.step == 10]
    assert release_checkpoint(checkpoint, settings).version == 1  # every stage cached; publishing is a no-op
    store = release_store(settings)
    promote(store, "main", 1)
    best = champion(settings, store)
    assert best is not None
    kept = best.with_name(best.name + SCREEN_SUFFIX)  # the release carried its raw checkpoint's screen
    reference = json.loads(kept.read_text())
    assert reference["step"] == 10 and len(reference["items"]) == 200 and reference["verdict"]["passed"]

    same = screen(checkpoint, best, settings)  # like with like: the champion's own raw checkpoint
    assert same["passed"] and same["estimate"] == 0 and same["items"] == 200 and same["mde"] > 0
    kept.write_text(json.dumps(reference | {"items": [[i, h, 1.0] for i, h, _ in reference["items"]]}))
    screened = release_checkpoint(checkpoint, settings)  # as if the champion came from a checkpoint right on all
    assert screened.state == "screened_out" and "for the champion's raw checkpoint (step 10)" in screened.reason
    kept.unlink()  # a champion published by hand: nothing to compare with
    assert "has no screening results of its raw checkpoint" in screen(checkpoint, best, settings)["reason"]

    policy = tmp_path / "policy.yaml"  # the stream decides regressions; v1, the first on stable, is the baseline
    policy.write_text(
        "floors: {shipyard_arithmetic_heldout: {metric: exact_match, min: 0.99}}\n"
        "regression: {tasks: {shipyard_arithmetic_heldout: exact_match}, stream: true, baseline: first-stable}\n"
    )
    shutil.copytree(rl_checkpoint, tmp_path / "again" / "checkpoint-10")  # the same checkpoint, another run
    env = {"SHIPYARD_PIPELINE__POLICY": str(policy), "SHIPYARD_PIPELINE__SCREENING": "false"}
    flowed = shipyard(watched, "watch", "--once", "--source", str(tmp_path / "again"), "--json", **env)
    assert flowed.returncode == 0, flowed.stderr  # through the release flow, in place
    [gated] = json.loads(flowed.stdout)
    assert gated["state"] == "gate_failed" and "floor: shipyard_arithmetic_heldout" in gated["reason"]
    assert "guard" not in gated["reason"] and "stream" not in gated["reason"]  # its own checkpoint: no drift

    ledger = Ledger(store)
    events = [ledger.event(n) for n in range(1, ledger.refresh().events + 1)]
    assert [e.type for e in events if e.type != "refused"] == ["released", "promoted", "skipped", "gate_failed"]
    [released] = [e for e in events if e.type == "released"]
    [skipped] = [e for e in events if e.type == "skipped"]
    assert released.data["screen"]["reason"].endswith("no champion yet: let through")  # the fates carry the numbers
    assert skipped.data["screen"]["upper"] < -0.1 and skipped.data["screen"]["seconds"] == 0  # cached results
    [failed] = [e for e in events if e.type == "gate_failed"]
    assert failed.data["stream"]["t"] == 1 and not failed.data["stream"]["blocked"]  # the line's first decision
    assert failed.data["stream"]["line"] == "main"  # a record counts only in its own line
    assert "stream" not in released.data  # v1 had no champion: no stream decision
