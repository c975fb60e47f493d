"""Eval suites: a named list of lm-eval tasks plus run options, as YAML data.

A task is a path to an lm-eval task YAML (relative to the suite file) or the
name of one of lm-eval's own tasks. Local `data_files` of a task YAML are
resolved relative to that YAML (lm-eval would resolve them against the working
directory). A suite's digest covers the suite, its task files, their data, the
Python hooks beside them and its judge (settings and weights, `safety.judge`),
so any change makes a new cache key. Built-in suites by name: those installed
profiles name (`shipyard.profiles`; the demo's `capability` and `safety`).
Called by the eval runner.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from shipyard.safety.judge import JudgeSpec, judge_digest

from shipyard.errors import ConfigError, NotFound
from shipyard.profiles import suites
from shipyard.schema import did_you_mean, load_yaml


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
    model: Literal["hf", "vllm", "sglang"] = Field(
        "hf", description="lm-eval's model backend: hf (transformers), vllm or sglang (their packages installed)."
    )
    model_args: dict[str, Any] = Field(
        default_factory=dict,
        description="The backend's own arguments, as lm-eval's --model_args: e.g. hf {parallelize: true}, vllm "
        "{tensor_parallel_size: 4, data_parallel_size: 2, gpu_memory_utilization: 0.9}. The model path is Shipyard's.",
    )

    judge: JudgeSpec | None = Field(
        None,
        description="What judges the responses of the suite's safety tasks (string, classifier or causal); each"
        " judged item gets refusal and harmful metrics, a category and the judge's probability. None: no judge.",
    )

    @field_validator("model_args")
    @classmethod
    def _no_model_path(cls, args: dict[str, Any]) -> dict[str, Any]:
        taken = sorted({"pretrained", "model", "model_path", "tokenizer"} & set(args))
        if taken:
            raise ValueError(f"{', '.join(taken)}: Shipyard sets the model being evaluated; remove it")
        return args


@dataclass(frozen=True)
class LocalTask:
    """A task defined by a YAML file beside the suite: its name, file, and its data files made absolute."""

    name: str
    path: Path
    data_files: Any = None


@dataclass(frozen=True)
class Suite:
    spec: SuiteSpec
    path: Path
    tasks: list[str]  # every task's name, in the suite's order
    local: list[LocalTask]  # those defined by task files beside the suite (the rest are lm-eval's own)
    digest: str
    judge_digest: str | None = None  # the judge's settings, weights and template (part of `digest`)

    def judged(self) -> list[str]:
        """The tasks whose responses the suite's judge rules on."""
        judge = self.spec.judge
        if judge is None:
            return []
        return list(self.tasks) if judge.tasks is None else [t for t in self.tasks if t in judge.tasks]


def load_suite(name_or_path: str) -> Suite:
    """A suite YAML file, or a suite an installed profile names (`capability`, `safety`: the demo's)."""
    path = Path(name_or_path)
    if not path.is_file():
        named = suites()
        if name_or_path not in named:
            raise NotFound(f"unknown suite '{name_or_path}': not a file{did_you_mean(name_or_path, list(named))}")
        path = named[name_or_path]
    spec = load_yaml(path, SuiteSpec)
    tasks, local = [], []
    hashed: list[bytes] = [json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()]
    for task in spec.tasks:
        if task.endswith((".yaml", ".yml")):
            found, files = _local_task(path, task)
            local.append(found)
            tasks.append(found.name)
            hashed += [f.read_bytes() for f in files]
        else:
            tasks.append(task)
    judged = None
    if spec.judge is not None:
        unknown = sorted(set(spec.judge.tasks or ()) - set(tasks))
        if unknown:
            raise ConfigError(f"{path}: judge.tasks names {', '.join(unknown)}, not tasks of the suite ({tasks})")
        judged = judge_digest(spec.judge, path)
        hashed.append(judged.encode())
    return Suite(spec, path, tasks, local, hashlib.sha256(b"\0".join(hashed)).hexdigest(), judged)


def overlays(suite: Suite, directory: Path) -> Path:
    """Task files for lm-eval's `TaskManager(include_path=directory)`: each local task included as written, its
    data files absolute (lm-eval would resolve them against the working directory, not the task file)."""
    for task in suite.local:
        overlay: dict[str, Any] = {"include": str(task.path), "task": task.name}
        if task.data_files is not None:
            kwargs = read_task_yaml(task.path).get("dataset_kwargs") or {}
            overlay["dataset_kwargs"] = {**kwargs, "data_files": task.data_files}
        (directory / f"{task.name}.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
    return directory


class _TaskLoader(yaml.SafeLoader):
    """YAML as lm-eval writes task files, its `!function` hooks kept as text: read, never imported here."""


_TaskLoader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


def read_task_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(), Loader=_TaskLoader)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not a readable lm-eval task file: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("task"), str):
        raise ConfigError(f"{path}: not an lm-eval task file (expected a mapping with a `task:` name)")
    return data


def _local_task(suite_file: Path, task: str) -> tuple[LocalTask, list[Path]]:
    """The task file's name and data (made absolute), and the files its results depend on."""
    path = (suite_file.parent / task).resolve()
    if not path.is_file():
        raise NotFound(f"{suite_file}: task file {task} not found (looked at {path})")
    config = read_task_yaml(path)
    files = [path, *sorted(path.parent.glob("*.py"))]
    data_files = (config.get("dataset_kwargs") or {}).get("data_files")
    if data_files is not None:
        data_files = _resolve(path, data_files)
        files += [Path(f) for f in _flatten(data_files)]
    return LocalTask(config["task"], path, data_files), files


def _resolve(task_file: Path, data_files: Any) -> Any:
    if isinstance(data_files, str):
        resolved = (task_file.parent / data_files).resolve()
        if not resolved.is_file():
            raise NotFound(f"{task_file}: data file {data_files} not found (looked at {resolved})")
        return str(resolved)
    if isinstance(data_files, list):
        return [_resolve(task_file, f) for f in data_files]
    return {split: _resolve(task_file, f) for split, f in data_files.items()}


def _flatten(data_files: Any) -> list[str]:
    if isinstance(data_files, str):
        return [data_files]
    values = data_files if isinstance(data_files, list) else list(data_files.values())
    return [f for v in values for f in _flatten(v)]
