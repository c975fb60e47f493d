"""The check every command taking a model directory makes first: a wrong path fails naming it, not in transformers."""

from __future__ import annotations

import json
from pathlib import Path

from shipyard.errors import ConfigError, NotFound


def require_model_dir(path: Path) -> Path:
    """`path` if it is a directory with a `config.json` holding a JSON object; else a clear error naming it."""
    if not path.exists():
        raise NotFound(f"{path}: not a model directory (it does not exist)", path=str(path))
    config = path / "config.json"
    if not config.is_file():
        raise ConfigError(f"{path}: not a model directory (no config.json)", path=str(path))
    try:
        data = json.loads(config.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{config}: not readable JSON ({exc})", path=str(config)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{config}: expected a JSON object, found {type(data).__name__}", path=str(config))
    return path
