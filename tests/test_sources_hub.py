"""The Hub source against the Hub-compatible test server on 127.0.0.1, through huggingface_hub."""

import json
from pathlib import Path

import pytest

from shipyard.errors import SourceError
from shipyard.intake.scan import scan
from shipyard.intake.sources import open_source
from shipyard.settings import HubSettings

from .helpers import make_checkpoint
from .hub_server import HubServer


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.usefixtures("hub_online")
def test_hub_run_is_scanned_like_a_local_one(hub_server: HubServer, tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_checkpoint(run, 10, tiny_model_dir)
    hub_server.commit("lab/rl-run", tree(run))
    seen = scan(open_source("hf://lab/rl-run", hub=HubSettings(endpoint=hub_server.url)), tmp_path / "cache")
    assert [(c.step, c.state) for c in seen] == [(10, "complete")]
    assert seen[0].uri == "hf://lab/rl-run/checkpoint-10"
    assert seen[0].metrics == {"reward": 0.1}
    weights = (Path(seen[0].path) / "model.safetensors").read_bytes()
    assert weights == (run / "checkpoint-10/model.safetensors").read_bytes()

    make_checkpoint(run, 20, tiny_model_dir)
    hub_server.commit("lab/rl-run", tree(run))
    later = scan(open_source("hf://lab/rl-run", hub=HubSettings(endpoint=hub_server.url)), tmp_path / "cache")
    assert [(c.step, c.state) for c in later] == [(10, "complete"), (20, "complete")]


@pytest.mark.usefixtures("hub_online")
def test_files_are_read_at_the_commit_that_was_listed(hub_server: HubServer, tmp_path: Path) -> None:
    hub_server.commit("lab/moving", {"checkpoint-1/trainer_state.json": b"old"})
    source = open_source("hf://lab/moving", hub=HubSettings(endpoint=hub_server.url))
    source.list_files()
    hub_server.commit("lab/moving", {"checkpoint-1/trainer_state.json": b"new"})  # the trainer pushes meanwhile
    source.fetch("checkpoint-1", "trainer_state.json", tmp_path / "state")
    assert (tmp_path / "state").read_bytes() == b"old"


@pytest.mark.usefixtures("hub_online")
def test_hub_branch_revision_and_missing_repo(hub_server: HubServer, tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    ckpt = make_checkpoint(run, 5, tiny_model_dir)
    (ckpt / "trainer_state.json").unlink()
    hub_server.commit("lab/branchy", tree(run), branch="step-5")
    seen = scan(open_source("hf://lab/branchy@step-5", hub=HubSettings(endpoint=hub_server.url)), tmp_path / "cache")
    assert [(c.step, c.state) for c in seen] == [(5, "incomplete")]
    with pytest.raises(SourceError, match="hf://lab/none: cannot list"):
        open_source("hf://lab/none", hub=HubSettings(endpoint=hub_server.url)).list_files()


@pytest.mark.usefixtures("hub_online")
def test_every_way_a_trainer_pushes_is_found(hub_server: HubServer, tiny_model_dir: Path, tmp_path: Path) -> None:
    model = {name: (tiny_model_dir / name).read_bytes() for name in ("config.json", "model.safetensors")}
    state = {"global_step": 20, "log_history": [{"step": 20, "reward": 0.5}]}
    # hub_strategy="every_save": the model at the root, one commit per save
    hub_server.commit("lab/pushed", model, message="Training in progress, step 10")
    # hub_strategy="checkpoint": the same, plus last-checkpoint/ in a second commit
    hub_server.commit("lab/pushed", model, message="Training in progress, step 20")
    last = {f"last-checkpoint/{name}": data for name, data in model.items()}
    last["last-checkpoint/trainer_state.json"] = json.dumps(state).encode()
    hub_server.commit("lab/pushed", last, message="Training in progress, step 20, checkpoint")
    # a tag per step
    hub_server.tag("lab/pushed", "checkpoint-30")
    hub_server.commit("lab/pushed", {"README.md": b"no model here"}, branch="notes")

    source = open_source("hf://lab/pushed", hub=HubSettings(endpoint=hub_server.url))
    seen = scan(source, tmp_path / "cache")
    assert [(c.step, c.layout, c.state) for c in seen] == [
        (10, "hub", "complete"),
        (20, "hub", "complete"),
        (30, "hub", "complete"),
    ]
    assert seen[1].metrics == {"reward": 0.5}  # read from last-checkpoint/trainer_state.json
    assert seen[0].uri == "hf://lab/pushed/@step-10"
    again = scan(source, tmp_path / "cache", skip=[c.uri for c in seen[:2]])
    assert [c.step for c in again] == [30]
