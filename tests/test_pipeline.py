"""Checkpoints through the whole pipeline on the tiny model: released once, screened out, or failed by the gate."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shipyard.cli import app
from shipyard.ledger import Ledger
from shipyard.pipeline import release_checkpoint, release_store
from shipyard.publish import promote
from shipyard.settings import PipelineSettings, Settings
from shipyard.sources import open_source
from shipyard.watch import scan

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def watched(rl_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home where `shipyard watch --once` took the short RL run's checkpoint through the pipeline."""
    home = tmp_path_factory.mktemp("home")
    command = ["watch", "--once", "--source", str(rl_checkpoint.parent), "--json"]
    first = CliRunner().invoke(app, command, env={"SHIPYARD_HOME": str(home)})
    assert first.exit_code == 0, first.output
    assert [(o["step"], o["state"], o["version"]) for o in json.loads(first.stdout)] == [(10, "released", 1)]
    again = CliRunner().invoke(app, command, env={"SHIPYARD_HOME": str(home)})
    assert again.exit_code == 0 and json.loads(again.stdout) == []  # decided: never taken twice
    return home


def test_watch_releases_the_run_once(watched: Path) -> None:
    state = Ledger(release_store(Settings(home=watched))).refresh()
    assert list(state.releases) == [("main", 1)]
    assert state.releases[("main", 1)].data["checkpoint_digest"]  # lineage reached the ledger


def test_rerun_screening_and_gate_record_their_reasons(watched: Path, rl_checkpoint: Path, tmp_path: Path) -> None:
    settings = Settings(home=watched)
    [checkpoint] = [c for c in scan(open_source(str(rl_checkpoint.parent)), tmp_path / "cache") if c.step == 10]
    assert release_checkpoint(checkpoint, settings).version == 1  # every stage cached; publishing is a no-op
    store = release_store(settings)
    promote(store, "main", 1)  # now the raw checkpoint must come close to the post-trained champion

    strict = Settings(home=watched, pipeline=PipelineSettings(screening_margin=0.0))
    screened = release_checkpoint(checkpoint, strict)
    assert screened.state == "screened_out" and "vs champion" in screened.reason

    policy = tmp_path / "policy.yaml"
    policy.write_text("floors: {shipyard_arithmetic_heldout: {metric: exact_match, min: 0.99}}\n")
    no_screening = PipelineSettings(policy=policy, screening=False)
    gated = release_checkpoint(checkpoint, Settings(home=watched, pipeline=no_screening))
    assert gated.state == "gate_failed" and "floor: shipyard_arithmetic_heldout" in gated.reason

    ledger = Ledger(store)
    kinds = [ledger.event(n).type for n in range(1, ledger.refresh().events + 1)]
    assert kinds == ["released", "promoted", "skipped", "gate_failed"]
