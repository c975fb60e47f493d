"""One checkpoint through the whole pipeline on the demo's tiny model: released, screened out, or failed by the gate."""

from pathlib import Path

import pytest

from shipyard.ledger import Ledger
from shipyard.pipeline import release_checkpoint, release_store
from shipyard.publish import promote
from shipyard.settings import PipelineSettings, Settings
from shipyard.sources import open_source
from shipyard.watch import scan

pytestmark = pytest.mark.slow


def test_a_checkpoint_is_released_once_then_screened_out_or_gated(rl_checkpoint: Path, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    [checkpoint] = [c for c in scan(open_source(str(rl_checkpoint.parent)), tmp_path / "cache") if c.step == 10]

    first = release_checkpoint(checkpoint, settings)
    assert first.state == "released" and first.version == 1, first
    again = release_checkpoint(checkpoint, settings)  # every stage cached; publishing again is a no-op
    assert again.version == 1
    store = release_store(settings)
    state = Ledger(store).refresh()
    assert list(state.releases) == [("main", 1)]
    assert state.releases[("main", 1)].data["checkpoint_digest"]  # lineage reached the ledger

    promote(store, "main", 1)  # now the raw checkpoint must come close to the post-trained champion
    strict = Settings(home=tmp_path / "home", pipeline=PipelineSettings(screening_margin=0.0))
    screened = release_checkpoint(checkpoint, strict)
    assert screened.state == "screened_out" and "vs champion" in screened.reason

    policy = tmp_path / "policy.yaml"
    policy.write_text("floors: {shipyard_arithmetic_heldout: {metric: exact_match, min: 0.99}}\n")
    no_screening = PipelineSettings(policy=policy, screening=False)
    gated = release_checkpoint(checkpoint, Settings(home=tmp_path / "home", pipeline=no_screening))
    assert gated.state == "gate_failed" and "floor: shipyard_arithmetic_heldout" in gated.reason
    ledger = Ledger(store)
    kinds = [ledger.event(n).type for n in range(1, ledger.refresh().events + 1)]
    assert kinds == ["released", "promoted", "skipped", "gate_failed"]
