"""Eval suites: a named list of lm-eval tasks plus run options, as YAML data.

A task is a path to an lm-eval task YAML (relative to the suite file) or the
name of one of lm-eval's own tasks. Local `data_files` of a task YAML are
resolved relative to that YAML (lm-eval would resolve them against the working
directory). A suite's digest covers the suite, its task files, their data and
the Python hooks beside them, so any change makes a new cache key. Built-in
suites: `capability` (`evals/suites/`) and `safety` (`safety/suites/`).
Called by the eval runner.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shipyard.errors import ConfigError
from shipyard.schema import did_you_mean, load_yaml

BUILTIN = {
    "capability": Path(__file__).parent / "suites" / "capability.yaml",
    "safety": Path(__file__).parents[1] / "safety" / "suites" / "safety.yaml",
}


class SuiteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The suite's name, as gate policies refer to it.")
    tasks: list[str] = Field(min_length=1, description="lm-eval task YAML paths (relative to this file) or task names.")
    num_fewshot: int | None = Field(None, ge=0, description="Few-shot examples per prompt; None: each task's own.")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N items of each task.")
    apply_chat_template: bool = Field(True, description="Render prompts with the model's chat template.")
    gen_kwargs: dict[str, Any] | None = Field(None, description="Generation settings over the tasks' own.")
    batch_size: int = Field(32, ge=1, description="Requests per forward pass.")
    seed: int = Field(0, description="lm-eval's random, numpy, torch and few-shot seeds.")


@dataclass(frozen=True)
class Suite:
    spec: SuiteSpec
    path: Path
    tasks: list[str | dict[str, Any]]  # task configs (local files, loaded and resolved) or lm-eval task names
    digest: str


def load_suite(name_or_path: str) -> Suite:
    """A built-in suite by name, or a suite YAML file."""
    path = Path(name_or_path)
    if not path.is_file():
        if name_or_path not in BUILTIN:
            raise ConfigError(f"unknown suite '{name_or_path}': not a file{did_you_mean(name_or_path, list(BUILTIN))}")
        path = BUILTIN[name_or_path]
    spec = load_yaml(path, SuiteSpec)
    tasks: list[str | dict[str, Any]] = []
    hashed: list[bytes] = [json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()]
    for task in spec.tasks:
        if task.endswith((".yaml", ".yml")):
            config, files = _task_config(path, task)
            tasks.append(config)
            hashed += [f.read_bytes() for f in files]
        else:
            tasks.append(task)
    return Suite(spec, path, tasks, hashlib.sha256(b"\0".join(hashed)).hexdigest())


def _task_config(suite_file: Path, task: str) -> tuple[dict[str, Any], list[Path]]:
    """The task YAML loaded by lm-eval's own loader, local data made absolute; and the files it depends on."""
    from lm_eval.tasks._yaml_loader import load_yaml as load_task_yaml

    path = (suite_file.parent / task).resolve()
    if not path.is_file():
        raise ConfigError(f"{suite_file}: task file {task} not found (looked at {path})")
    try:
        config = load_task_yaml(path)
    except Exception as exc:  # lm-eval raises yaml, import and value errors alike
        raise ConfigError(f"{path}: not a loadable lm-eval task: {exc}") from None
    files = [path, *sorted(path.parent.glob("*.py"))]
    data_files = config.get("dataset_kwargs", {}).get("data_files")
    if data_files is not None:
        resolved = _resolve(path, data_files)
        config["dataset_kwargs"] = {**config["dataset_kwargs"], "data_files": resolved}
        files += [Path(f) for f in _flatten(resolved)]
    return config, files


def _resolve(task_file: Path, data_files: Any) -> Any:
    if isinstance(data_files, str):
        resolved = (task_file.parent / data_files).resolve()
        if not resolved.is_file():
            raise ConfigError(f"{task_file}: data file {data_files} not found (looked at {resolved})")
        return str(resolved)
    if isinstance(data_files, list):
        return [_resolve(task_file, f) for f in data_files]
    return {split: _resolve(task_file, f) for split, f in data_files.items()}


def _flatten(data_files: Any) -> list[str]:
    if isinstance(data_files, str):
        return [data_files]
    values = data_files if isinstance(data_files, list) else list(data_files.values())
    return [f for v in values for f in _flatten(v)]
