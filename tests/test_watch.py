"""Scanning a local run: completion rules, snapshots, and a corpus of bad checkpoints."""

import json
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from shipyard.checkpoints import Checkpoint
from shipyard.intake.scan import scan
from shipyard.intake.sources import LocalSource, open_source

from .corpus import HOSTILE, write_hostile
from .helpers import make_checkpoint

STATE = {"log_history": [{"step": 0, "reward": 0.5}]}


def by_step(seen: list[Checkpoint]) -> dict[int, Checkpoint]:
    return {c.step: c for c in seen}


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, Path, dict[str, int]]:
    """Good checkpoints at 1 and 20, one still being written at 2, every hostile case from 3 on, one tolerated."""
    run = tmp_path_factory.mktemp("run")
    outside = tmp_path_factory.mktemp("outside")
    make_checkpoint(run, 1, tiny_model_dir)
    ckpt = make_checkpoint(run, 2, tiny_model_dir)  # still being written
    (ckpt / "trainer_state.json").unlink()
    steps = write_hostile(run, outside, tiny_model_dir, first_step=3)
    ckpt = make_checkpoint(run, 19, tiny_model_dir)  # float32 weights under a bfloat16 config, as veRL saves them
    config = json.loads((ckpt / "config.json").read_text())
    config["dtype"] = "bfloat16"
    (ckpt / "config.json").write_text(json.dumps(config))
    make_checkpoint(run, 20, tiny_model_dir)  # good, after all the bad ones
    return run, outside / "payload-ran", steps


@pytest.fixture(scope="module")
def scanned(
    bad_run: tuple[Path, Path, dict[str, int]], tmp_path_factory: pytest.TempPathFactory
) -> dict[int, Checkpoint]:
    return by_step(scan(open_source(str(bad_run[0])), tmp_path_factory.mktemp("cache")))


@pytest.mark.parametrize("case", HOSTILE)
def test_bad_checkpoint_is_refused_with_its_reason(
    scanned: dict[int, Checkpoint], bad_run: tuple[Path, Path, dict[str, int]], case: str
) -> None:
    step = bad_run[2][case]
    reason = HOSTILE[case][1].replace("{ckpt}", f"checkpoint-{step}")
    assert scanned[step].state == "invalid"
    assert re.search(reason, scanned[step].reason), scanned[step].reason


def test_bad_checkpoints_do_not_stop_the_scan(scanned: dict[int, Checkpoint], bad_run: tuple) -> None:
    assert sorted(scanned) == [1, 2, *bad_run[2].values(), 19, 20]
    assert scanned[1].state == scanned[19].state == scanned[20].state == "complete"  # 19: float32 under bf16
    assert scanned[2].state == "incomplete"
    assert "trainer_state.json not yet written" in scanned[2].reason
    assert not bad_run[1].exists()  # nothing a checkpoint held ran


def test_pickle_payload_never_runs_even_when_pickles_are_allowed(bad_run: tuple, tmp_path: Path) -> None:
    run, marker, steps = bad_run
    seen = by_step(scan(open_source(str(run)), tmp_path / "cache", allow_pickle_weights=True))
    assert seen[steps["pickle payload"]].state == "invalid"
    assert "weights_only=True" in seen[steps["pickle payload"]].reason
    assert not marker.exists()


def test_good_checkpoint_is_snapshotted_with_digests_and_metrics(
    scanned: dict[int, Checkpoint], bad_run: tuple[Path, Path, dict[str, int]]
) -> None:
    good = scanned[20]
    snapshot = Path(good.path)
    assert set(good.files) == {p.name for p in snapshot.iterdir()}
    assert "optimizer.pt" not in good.files
    assert good.metrics == {"reward": 0.2}
    assert good.uri == f"{bad_run[0].as_uri()}/checkpoint-20"
    assert good.run_id == bad_run[0].name
    weights = load_file(snapshot / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_unchanged_files_are_stored_once(scanned: dict[int, Checkpoint]) -> None:
    first, last = scanned[1], scanned[20]
    assert first.files["tokenizer.json"] == last.files["tokenizer.json"]
    assert first.digest != last.digest  # trainer_state differs
    blob = Path(first.path) / "tokenizer.json"
    assert blob.stat().st_ino == (Path(last.path) / "tokenizer.json").stat().st_ino


def test_snapshot_survives_rotation_of_the_source(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    ckpt = make_checkpoint(run, 1, tiny_model_dir)
    seen = scan(open_source(str(run)), tmp_path / "cache")
    shutil.rmtree(ckpt)
    assert (Path(seen[0].path) / "model.safetensors").is_file()
    assert AutoModelForCausalLM.from_pretrained(seen[0].path) is not None


def test_other_layouts_follow_their_markers(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    for step in (10, 20):
        shutil.copytree(tiny_model_dir, run / "verl" / f"global_step_{step}" / "actor" / "huggingface")
        shutil.copytree(tiny_model_dir, run / "openrlhf" / f"global_step{step}_hf")
    (run / "verl" / "latest_checkpointed_iteration.txt").write_text("10")
    (run / "openrlhf" / "_actor").mkdir()
    (run / "openrlhf" / "_actor" / "latest").write_text("global_step20")
    shutil.copytree(tiny_model_dir, run / "exported")
    (run / "exported" / "COMPLETE").touch()
    shutil.copytree(tiny_model_dir, run / "unmarked")
    seen = {(c.layout, c.step): c.state for c in scan(open_source(str(run)), tmp_path / "cache")}
    assert seen == {
        ("verl", 10): "complete",
        ("verl", 20): "incomplete",
        ("deepspeed", 10): "complete",
        ("deepspeed", 20): "complete",
        ("marker", 0): "complete",
    }


def test_two_directories_naming_one_step_are_reported_not_taken(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_checkpoint(run, 10, tiny_model_dir)
    shutil.copytree(run / "checkpoint-10", run / "checkpoint-0010")
    make_checkpoint(run, 20, tiny_model_dir)
    seen = scan(open_source(str(run)), tmp_path / "cache")
    assert [(c.step, c.state) for c in seen] == [(10, "incomplete"), (10, "incomplete"), (20, "complete")]
    assert "step 10 is claimed by both checkpoint-0010 and checkpoint-10" in seen[0].reason


def test_openrlhf_checkpoints_wait_for_their_tokenizer_and_without_latest_for_a_later_step(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with_latest, without = tmp_path / "with-latest", tmp_path / "without-latest"
    (with_latest / "_actor").mkdir(parents=True)
    (with_latest / "_actor" / "latest").write_text("global_step30")  # written before the _hf directory
    half = with_latest / "global_step30_hf"
    half.mkdir()
    shutil.copy(tiny_model_dir / "model.safetensors", half)
    shutil.copy(tiny_model_dir / "config.json", half)
    [caught] = scan(open_source(str(with_latest)), tmp_path / "cache")
    assert caught.state == "incomplete" and "no tokenizer files yet" in caught.reason
    for step in (10, 20):
        shutil.copytree(tiny_model_dir, without / f"global_step{step}_hf")
    seen = by_step(scan(open_source(str(without)), tmp_path / "cache"))
    assert seen[10].state == "complete"
    assert seen[20].state == "incomplete" and "taken once a later step appears" in seen[20].reason


class TrainerAtWork(LocalSource):
    """A run directory the trainer touches while the watcher copies it: after the first file, `act` runs once
    (files are fetched by several threads at once: the first to finish runs it)."""

    def __init__(self, root: Path, act: Any) -> None:
        super().__init__(root)
        self.act: Any = act
        self.lock = threading.Lock()

    def fetch(self, checkpoint: str, name: str, dest: Path) -> str:
        digest = super().fetch(checkpoint, name, dest)
        with self.lock:
            act, self.act = self.act, None
            if act is not None:
                act()
        return digest


def test_a_checkpoint_rewritten_mid_copy_is_looked_at_again_and_one_rotated_away_is_recorded_so(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from shipyard.intake.selection import load_state, select
    from shipyard.settings import WatchSettings

    run = tmp_path / "run"
    ckpt = make_checkpoint(run, 10, tiny_model_dir)
    rewritten = TrainerAtWork(run, lambda: (ckpt / "config.json").write_text((ckpt / "config.json").read_text() + " "))
    [seen] = scan(rewritten, tmp_path / "cache")
    assert seen.state == "incomplete" and "config.json changed while being copied" in seen.reason
    [again] = scan(open_source(str(run)), tmp_path / "cache")  # the next poll: settled, taken
    assert again.state == "complete"
    ckpt = make_checkpoint(run, 20, tiny_model_dir)
    rotated = TrainerAtWork(run, lambda: shutil.rmtree(ckpt))
    gone = by_step(scan(rotated, tmp_path / "cache", skip=[again.uri]))[20]
    assert gone.state == "gone"
    state = load_state(tmp_path / "watch", rotated.uri)
    select([gone], state, WatchSettings(), 0.0)
    assert (state.decided[gone.uri].state, state.decided[gone.uri].reason) == (
        "skipped",
        "rotated away by the trainer before it could be copied",
    )


def test_a_checkpoint_state_is_one_of_the_lifecycle_and_its_fate_maps_to_one_ledger_event() -> None:
    from shipyard.checkpoints import FATE_EVENTS, CheckpointState, RunState
    from shipyard.events import EventType

    fields = {"source_uri": "file:///r", "run_id": "r", "step": 1, "layout": "hf", "uri": "file:///r/c-1"}
    loaded = Checkpoint(**fields, state="selected")  # as a decision log or a flow's parameters give it
    assert loaded.state is CheckpointState.SELECTED and json.loads(json.dumps(loaded.as_dict()))["state"] == "selected"
    assert Checkpoint(**fields, state="started").state is RunState.STARTED  # its run goes on elsewhere
    with pytest.raises(ValueError, match="'chosen' is neither a checkpoint state nor a run state"):
        Checkpoint(**fields, state="chosen")
    assert not set(CheckpointState.__members__.values()) & set(RunState.__members__.values())
    recorded = {EventType.SKIPPED, EventType.REFUSED, EventType.GATE_FAILED, EventType.RELEASED, EventType.FAILED}
    assert set(FATE_EVENTS.values()) == recorded
    turned_away = {CheckpointState.GONE, CheckpointState.INVALID, CheckpointState.SKIPPED, CheckpointState.SCREENED_OUT}
    assert turned_away | {CheckpointState.GATE_FAILED, CheckpointState.RELEASED, RunState.FAILED} == set(FATE_EVENTS)


def test_a_checkpoint_whose_release_run_failed_is_a_ledger_event_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A stage failed, or a crashed run used up its retries: the fate reaches the ledger (so the dashboard and the
    webhook), not only the watch log; the next poll takes nothing again and records nothing again."""
    from shipyard.checkpoints import RunState
    from shipyard.orchestration.pipeline import Outcome
    from shipyard.orchestration.watcher import watch_once
    from shipyard.registry.ledger import Ledger
    from shipyard.registry.stores import LocalStore
    from shipyard.settings import Settings

    make_checkpoint(tmp_path / "run", 10, tiny_model_dir)
    settings = Settings(home=tmp_path / "home", watch={"source": str(tmp_path / "run")})
    why = "release run step-10 failed: posttrain-checkpoint/gpu run ended Failed: CUDA out of memory"
    taken: list[int] = []

    def take(c: Checkpoint) -> Outcome:
        taken.append(c.step)
        return Outcome(c.step, c.uri, RunState.FAILED, why)

    [outcome] = watch_once(settings, take=take)
    assert outcome.state == RunState.FAILED and watch_once(settings, take=take) == [] and taken == [10]
    _, events = Ledger(LocalStore(tmp_path / "home" / "releases")).snapshot()
    failed = [e for e in events if e.type == "failed"]
    assert [(e.data["step"], e.data["reason"]) for e in failed] == [(10, why)]


def test_a_checkpoint_that_kills_the_watcher_is_retaken_a_bounded_number_of_times_then_failed(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """In place, a checkpoint whose release kills the process (out of memory) stays in flight and is taken first
    after a restart: `pipeline.crash_retries` times, then it is `failed` and the run's next checkpoint goes on."""
    from shipyard.checkpoints import CheckpointState, RunState
    from shipyard.orchestration.pipeline import Outcome
    from shipyard.orchestration.watcher import watch_once
    from shipyard.registry.ledger import Ledger
    from shipyard.registry.stores import LocalStore
    from shipyard.settings import Settings

    make_checkpoint(tmp_path / "run", 10, tiny_model_dir)
    settings = Settings(home=tmp_path / "home", watch={"source": str(tmp_path / "run")}, pipeline={"crash_retries": 2})
    taken: list[int] = []

    def dies(c: Checkpoint) -> Outcome:
        taken.append(c.step)
        raise SystemExit("killed: out of memory")  # as far as the watch log knows, the process is gone

    for _ in range(3):  # the first take, then two retakes after restarts
        with pytest.raises(SystemExit):
            watch_once(settings, take=dies)
    make_checkpoint(tmp_path / "run", 20, tiny_model_dir)

    def releases(c: Checkpoint) -> Outcome:
        taken.append(c.step)
        return Outcome(c.step, c.uri, CheckpointState.RELEASED, "", 1)

    outcomes = watch_once(settings, take=releases)
    assert [(o.step, o.state) for o in outcomes] == [(10, RunState.FAILED), (20, CheckpointState.RELEASED)]
    assert taken == [10, 10, 10, 20] and "died while releasing it 3 times" in outcomes[0].reason
    _, events = Ledger(LocalStore(tmp_path / "home" / "releases")).snapshot()
    assert [e.data["step"] for e in events if e.type == "failed"] == [10]
