import json
from pathlib import Path

import pytest

from shipyard.errors import CheckpointError
from shipyard.intake.trainer_state import metrics_at, read_trainer_state


def test_metrics_of_a_step_merge_its_log_entries(tmp_path: Path) -> None:
    state = {
        "log_history": [
            {"step": 9, "reward": 0.1},
            {"step": 10, "reward": 0.5, "kl": 0.02, "completions/mean_length": 3.5, "loss": 0.1},
            {"step": 10, "eval_accuracy": 0.7},
        ]
    }
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps(state))
    assert metrics_at(read_trainer_state(path), 10) == {
        "reward": 0.5,
        "kl": 0.02,
        "mean_length": 3.5,
        "heldout_accuracy": 0.7,
    }


def test_unparsable_state_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "trainer_state.json"
    path.write_text('{"log_history": [')
    with pytest.raises(CheckpointError, match=r"trainer_state\.json: not valid JSON"):
        read_trainer_state(path)


def test_missing_state_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"trainer_state\.json: missing"):
        read_trainer_state(tmp_path / "trainer_state.json")
