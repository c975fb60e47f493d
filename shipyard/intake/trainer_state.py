"""Reading the `trainer_state.json` that transformers and TRL write last in a checkpoint.

Gives the trainer metrics of one step (mean reward, KL, completion length and
any held-out score) from `log_history`. Used by the demo run's report and by
the checkpoint watcher.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from shipyard.errors import CheckpointError

# trainer_state key -> the name Shipyard uses for it.
METRIC_KEYS = {
    "reward": "reward",
    "kl": "kl",
    "completions/mean_length": "mean_length",
    "eval_accuracy": "heldout_accuracy",
}


def read_trainer_state(path: Path) -> dict[str, Any]:
    """The parsed `trainer_state.json` at `path`, or a `CheckpointError` naming the file."""
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(state, dict) or not isinstance(state.get("log_history", []), list):
        raise CheckpointError(f"{path}: expected an object with a 'log_history' list")
    return state


def metrics_at(state: dict[str, Any], step: int) -> dict[str, float]:
    """The finite metrics logged at `step`, merged over its log entries, under Shipyard's names."""
    metrics: dict[str, float] = {}
    for entry in state.get("log_history", []):
        if not isinstance(entry, dict) or entry.get("step") != step:
            continue
        for key, name in METRIC_KEYS.items():
            value = entry.get(key)
            if isinstance(value, int | float) and math.isfinite(value):  # NaN/Inf would not be JSON in the ledger
                metrics[name] = float(value)
    return metrics
