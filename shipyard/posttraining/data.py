"""The data of a post-training stage: loaded, checked against the method, and digested.

A local JSONL file is read line by line (an unparsable line is named by file
and line); a `datasets` id is loaded with `datasets.load_dataset`. Each stage's
method needs its columns (DPO: `chosen` and `rejected`, usually `prompt`;
SFT: `messages`, `prompt` and `completion`, or `text`); conversational rows
need a tokenizer with a chat template. Problems are `ConfigError`s naming
the recipe, the stage and the data. Called by `shipyard.posttraining.posttrain`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, concatenate_datasets
from transformers import PreTrainedTokenizerBase

from shipyard.errors import ConfigError
from shipyard.posttraining.recipe import Stage, local_dataset

COLUMNS = {
    "dpo": [("prompt", "chosen", "rejected"), ("chosen", "rejected")],
    "sft": [("messages",), ("prompt", "completion"), ("text",)],
}


@dataclass(frozen=True)
class StageData:
    dataset: Dataset
    digest: str  # sha256 of the file's bytes, or the `datasets` fingerprint
    origin: str  # the file's path or the dataset id, for messages and lineage


def load_stage_data(recipe_file: Path, stage: Stage, tokenizer: PreTrainedTokenizerBase) -> StageData:
    """The stage's data set(s), each checked for the method's columns, concatenated on those columns."""
    names = [stage.dataset] if isinstance(stage.dataset, str) else stage.dataset
    parts = [_checked(recipe_file, stage, name, tokenizer) for name in names]
    if len(parts) == 1:
        return parts[0]
    columns = next(c for c in COLUMNS[stage.method] if all(set(c) <= set(p.dataset.column_names) for p in parts))
    dataset = concatenate_datasets([p.dataset.select_columns(list(columns)) for p in parts])
    digest = hashlib.sha256(" ".join(p.digest for p in parts).encode()).hexdigest()
    return StageData(dataset, digest, " + ".join(p.origin for p in parts))


def _checked(recipe_file: Path, stage: Stage, name: str, tokenizer: PreTrainedTokenizerBase) -> StageData:
    path = local_dataset(recipe_file, stage, name)
    data = _read_jsonl(path) if path else _load_hub(name, stage)
    where = f"{recipe_file}: stage '{stage.name}': dataset {data.origin}"
    if len(data.dataset) == 0:
        raise ConfigError(f"{where} is empty")
    columns = set(data.dataset.column_names)
    if not any(set(option) <= columns for option in COLUMNS[stage.method]):
        wanted = " or ".join("+".join(option) for option in COLUMNS[stage.method])
        raise ConfigError(f"{where}: {stage.method} needs columns {wanted}; found {', '.join(sorted(columns))}")
    if _conversational(data.dataset[0]) and tokenizer.chat_template is None:
        raise ConfigError(f"{where} is conversational (role/content messages) but the tokenizer has no chat template")
    return data


def _read_jsonl(path: Path) -> StageData:
    raw = path.read_bytes()
    rows = []
    for number, line in enumerate(raw.decode().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path}:{number}: expected a JSON object, found {type(row).__name__}")
        rows.append(row)
    return StageData(Dataset.from_list(rows), hashlib.sha256(raw).hexdigest(), str(path))


def _load_hub(name: str, stage: Stage) -> StageData:
    from datasets import load_dataset

    try:
        dataset = load_dataset(name, split=stage.split)
    except Exception as exc:  # datasets raises many kinds; all mean "this id cannot be loaded here"
        raise ConfigError(f"stage '{stage.name}': dataset '{name}' cannot be loaded: {exc}") from None
    assert isinstance(dataset, Dataset)
    return StageData(dataset, dataset._fingerprint, f"{name}[{stage.split}]")


def _conversational(row: dict[str, Any]) -> bool:
    return any(isinstance(v, list) and v and isinstance(v[0], dict) and "role" in v[0] for v in row.values())
