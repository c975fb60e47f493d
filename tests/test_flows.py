"""The release flow on a real Prefect API (the test harness): a checkpoint becomes a release; a rerun redoes nothing."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.testing.utilities import prefect_test_harness

from flows.release_checkpoint import release_checkpoint
from shipyard.ledger import Ledger
from shipyard.pipeline import release_store
from shipyard.settings import Settings
from shipyard.sources import open_source
from shipyard.watch import scan

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}), prefect_test_harness():
        yield


@pytest.mark.usefixtures("prefect_api")
def test_release_flow_publishes_once(rl_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("SHIPYARD_HOME", str(home))
    [checkpoint] = [c for c in scan(open_source(str(rl_checkpoint.parent)), home / "snapshots") if c.step == 10]
    first = release_checkpoint(checkpoint.as_dict())
    assert first["state"] == "released" and first["version"] == 1, first
    again = release_checkpoint(checkpoint.as_dict())
    assert again["version"] == 1
    assert list(Ledger(release_store(Settings(home=home))).refresh().releases) == [("main", 1)]
