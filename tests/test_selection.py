"""Selection policy and the watcher's persistent state."""

from dataclasses import replace
from pathlib import Path

import pytest

from shipyard.checkpoints import Checkpoint
from shipyard.errors import StateError
from shipyard.intake.selection import WatchState, load_state, poll, save_state, select, state_file
from shipyard.intake.sources import open_source
from shipyard.settings import WatchSettings

from .helpers import make_checkpoint


def ckpt(step: int, state: str = "complete") -> Checkpoint:
    return Checkpoint("file:///run", "run", step, "transformers", f"file:///run/checkpoint-{step}", state)


def states(state: WatchState) -> dict[int, str]:
    return {c.step: c.state for c in state.decided.values()}


def test_backlog_takes_the_newest_and_skips_the_rest_as_superseded() -> None:
    state = WatchState("file:///run")
    selected = select([ckpt(10), ckpt(20), ckpt(30)], state, WatchSettings(), now=0)
    assert [c.step for c in selected] == [30]
    assert states(state) == {10: "skipped", 20: "skipped", 30: "selected"}
    assert state.decided["file:///run/checkpoint-10"].reason == "superseded by step 30"


def test_only_the_checkpoint_taken_is_inspected_and_an_invalid_newest_supersedes_nothing() -> None:
    state, inspected = WatchState("file:///run"), []

    def inspect(c: Checkpoint) -> Checkpoint:
        inspected.append(c.step)
        return replace(c, state="invalid", reason="NaN") if c.step == 40 else replace(c, digest=f"d{c.step}")

    selected = select([ckpt(10), ckpt(20), ckpt(30), ckpt(40)], state, WatchSettings(), now=0, inspect=inspect)
    assert inspected == [40, 30]  # 10 and 20 were never copied
    assert [(c.step, c.digest) for c in selected] == [(30, "d30")]
    assert states(state) == {10: "skipped", 20: "skipped", 30: "selected", 40: "invalid"}
    assert state.decided["file:///run/checkpoint-20"].reason == "superseded by step 30"


def test_a_newest_still_changing_is_looked_at_again_and_supersedes_nothing_yet() -> None:
    state = WatchState("file:///run")
    changing = select([ckpt(10), ckpt(20)], state, WatchSettings(), 0, lambda c: replace(c, state="incomplete"))
    assert changing == [] and state.decided == {}
    assert [c.step for c in select([ckpt(10), ckpt(20)], state, WatchSettings(), now=1)] == [20]


def test_no_free_slot_copies_nothing_and_decides_nothing() -> None:
    state = WatchState("file:///run")
    policy = WatchSettings(max_in_flight=1)
    select([ckpt(10)], state, policy, now=0)

    def never(c: Checkpoint) -> Checkpoint:
        raise AssertionError(f"step {c.step} copied with no free slot")

    assert select([ckpt(20), ckpt(30)], state, policy, now=1, inspect=never) == []
    assert states(state) == {10: "selected"}


def test_oldest_first_takes_one_per_free_slot_and_keeps_the_rest_pending() -> None:
    state = WatchState("file:///run")
    policy = WatchSettings(newest_first=False, max_in_flight=2)
    assert [c.step for c in select([ckpt(10), ckpt(20), ckpt(30)], state, policy, now=0)] == [10, 20]
    assert select([ckpt(10), ckpt(20), ckpt(30)], state, policy, now=1) == []
    state.finish("file:///run/checkpoint-10", "released")
    assert [c.step for c in select([ckpt(30)], state, policy, now=2)] == [30]


def test_every_n_steps_and_invalid_are_recorded_with_reasons() -> None:
    state = WatchState("file:///run")
    bad = Checkpoint("file:///run", "run", 20, "transformers", "file:///run/checkpoint-20", "invalid", "NaN")
    select([ckpt(15), bad, ckpt(30)], state, WatchSettings(every_n_steps=10), now=0)
    assert states(state) == {15: "skipped", 20: "invalid", 30: "selected"}
    assert "not a multiple of every_n_steps=10" in state.decided["file:///run/checkpoint-15"].reason


def test_min_interval_holds_a_selection_back_until_due() -> None:
    state = WatchState("file:///run")
    policy = WatchSettings(min_interval_seconds=60, max_in_flight=5)
    select([ckpt(10)], state, policy, now=0)
    assert select([ckpt(20)], state, policy, now=30) == []
    assert [c.step for c in select([ckpt(20)], state, policy, now=61)] == [20]


def test_incomplete_checkpoints_are_not_decided() -> None:
    state = WatchState("file:///run")
    assert select([ckpt(10, "incomplete")], state, WatchSettings(), now=0) == []
    assert state.decided == {}


def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = WatchState("file:///run")
    select([ckpt(10), ckpt(20)], state, WatchSettings(), now=5)
    save_state(tmp_path, state, list(state.decided.values()), now=5)
    again = load_state(tmp_path, "file:///run")
    assert again == state
    assert again.last_selected_at == 5
    assert select([ckpt(10), ckpt(20)], again, WatchSettings(), now=6) == []


def test_a_finished_decision_is_appended_and_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    state = WatchState("file:///run")
    select([ckpt(10)], state, WatchSettings(), now=5)
    save_state(tmp_path, state, list(state.decided.values()), now=5)
    state.finish("file:///run/checkpoint-10", "released")
    save_state(tmp_path, state, [state.decided["file:///run/checkpoint-10"]], now=9)
    with state_file(tmp_path, "file:///run").open("a") as f:
        f.write('{"schema_version": 1, "at": 10, "checkp')  # a crash mid-append
    again = load_state(tmp_path, "file:///run")
    assert states(again) == {10: "released"}
    assert again.in_flight == 0 and again.last_selected_at == 5
    select([ckpt(20)], again, WatchSettings(), now=11)
    save_state(tmp_path, again, [again.decided["file:///run/checkpoint-20"]], now=11)
    assert states(load_state(tmp_path, "file:///run")) == {10: "released", 20: "selected"}


def test_a_corrupt_record_inside_the_log_is_a_clear_error(tmp_path: Path) -> None:
    state_file(tmp_path, "file:///run").write_text("garbage\n{}\n")
    with pytest.raises(StateError, match=r"\.jsonl:1: not a JSON decision record"):
        load_state(tmp_path, "file:///run")


def test_poll_takes_each_checkpoint_once_across_restarts(tiny_model_dir: Path, tmp_path: Path) -> None:
    run, home = tmp_path / "run", tmp_path / "home"
    make_checkpoint(run, 10, tiny_model_dir)
    policy = WatchSettings(newest_first=False, max_in_flight=10)
    first, _ = poll(open_source(str(run)), home, policy, now=0)
    make_checkpoint(run, 20, tiny_model_dir)
    second, state = poll(open_source(str(run)), home, policy, now=1)
    third, _ = poll(open_source(str(run)), home, policy, now=2)
    assert [c.step for c in first] == [10]
    assert [c.step for c in second] == [20]
    assert third == []
    assert states(state) == {10: "selected", 20: "selected"}
    assert all(Path(c.path).is_dir() and c.digest for c in state.decided.values())


def test_decided_checkpoints_are_not_examined_again(tiny_model_dir: Path, tmp_path: Path) -> None:
    run, home = tmp_path / "run", tmp_path / "home"
    ckpt = make_checkpoint(run, 10, tiny_model_dir)
    _, state = poll(open_source(str(run)), home, WatchSettings(), now=0)
    (ckpt / "model.safetensors").write_bytes(b"rewritten after the decision")
    _, again = poll(open_source(str(run)), home, WatchSettings(), now=1, state=state)
    assert states(again) == {10: "selected"}
    assert open_source(str(run)).list_files(prune=["checkpoint-10"]) == []
