"""Mirroring releases to the Hub-compatible test server: one commit per release, tags, channel branches, catch-up."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from shipyard.app.cli.main import app
from shipyard.registry.approvals import rollback
from shipyard.registry.ledger import Ledger
from shipyard.registry.mirror import mirror, mirror_configured
from shipyard.registry.publish import promote, publish
from shipyard.registry.stores import LocalStore

from .conftest import _free_port
from .helpers import gated
from .hub_server import HubServer

pytestmark = pytest.mark.usefixtures("hub_online")


@pytest.fixture
def hub_default(monkeypatch: pytest.MonkeyPatch, hub_server: HubServer) -> None:
    """Make the test server huggingface_hub's default endpoint, as `from_pretrained(repo)` reads it."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub_server.url)
    template = hub_server.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)


def release_dir(tiny_model_dir: Path, out: Path, scale: float, score: float) -> Path:
    shutil.copytree(tiny_model_dir, out)
    model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
    model.save_pretrained(out)
    (out / "evals.json").write_text(json.dumps({"arith": {"exact_match": score}}))
    return gated(out)


@pytest.mark.usefixtures("hub_default")
def test_releases_mirror_as_one_commit_each_with_tags_and_channel_branches(
    hub_server: HubServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "store")
    publish(release_dir(tiny_model_dir, tmp_path / "a", 1.0, 0.5), "main", store)
    publish(release_dir(tiny_model_dir, tmp_path / "b", 1.01, 0.75), "main", store)
    promote(store, "main", 1, "canary")
    promote(store, "main", 2, "canary")
    assert mirror(store, "main", "lab/model", hub_server.url) == [1, 2]
    assert mirror(store, "main", "lab/model", hub_server.url) == []  # replayed: nothing left to do

    repo = hub_server.repos["lab/model"]
    titles = [repo.titles[sha] for sha in repo.commits]
    assert titles == ["initial commit", "main v1", "main v2"]  # one commit per release
    assert set(repo.tags) == {"v1", "v2"} and repo.branches["canary"] == repo.tags["v2"]
    card = repo.commits[repo.tags["v2"]]["README.md"].decode()
    assert "model-index" in card and "+0.250 vs the previous release" in card

    pulled = AutoModelForCausalLM.from_pretrained("lab/model", revision="v1")
    local = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    assert torch.equal(pulled.lm_head.weight, local.lm_head.weight)

    rollback(store, "main", "canary", None)
    mirror(store, "main", "lab/model", hub_server.url)
    assert repo.branches["canary"] == repo.tags["v1"]
    assert {e["version"] for e in Ledger(store).refresh().mirrors} == {1, 2}


def test_a_crash_between_the_hub_and_the_ledger_is_caught_up(
    hub_server: HubServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "store")
    publish(release_dir(tiny_model_dir, tmp_path / "a", 1.0, 0.5), "main", store)
    api = HfApi(endpoint=hub_server.url)
    mirror(store, "main", "lab/crashy", hub_server.url)
    # Forget the `mirrored` event, as if the process died after tagging on the Hub.
    last = max((tmp_path / "store" / "ledger" / "events").iterdir())
    last.unlink()
    command = ["mirror", "--repo", "lab/crashy", "--store", str(tmp_path / "store"), "--json"]
    result = CliRunner().invoke(app, command, env={"SHIPYARD_HUB__ENDPOINT": hub_server.url})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mirrored"] == [1]  # recorded again, not committed again
    assert len(hub_server.repos["lab/crashy"].commits) == 2  # the initial commit and v1
    assert [t.name for t in api.list_repo_refs("lab/crashy").tags] == ["v1"]


def test_a_hub_that_cannot_be_reached_is_a_warning_and_the_next_mirror_catches_up(
    hub_server: HubServer, tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The flows mirror through `mirror_configured`: a Hub outage must not fail a release that is already out."""
    from shipyard.settings import load_settings

    store = LocalStore(tmp_path / "store")
    publish(release_dir(tiny_model_dir, tmp_path / "a", 1.0, 0.5), "main", store)
    log = logging.getLogger("shipyard.test-mirror")
    down = load_settings(None, hub={"mirror_repo": "lab/later", "endpoint": f"http://127.0.0.1:{_free_port()}"})
    caplog.set_level(logging.INFO)
    mirror_configured(down, store, "main", log)
    assert "mirror to lab/later failed" in caplog.text and "the next mirror catches it up" in caplog.text
    assert Ledger(store).refresh().mirrors == []
    up = load_settings(None, hub={"mirror_repo": "lab/later", "endpoint": hub_server.url})
    mirror_configured(up, store, "main", log)
    assert "mirrored v1 to lab/later" in caplog.text and set(hub_server.repos["lab/later"].tags) == {"v1"}
    unset = load_settings(None)
    caplog.clear()
    mirror_configured(unset, store, "main", log)
    assert caplog.text == ""  # no repo configured: the flows do not touch the Hub
