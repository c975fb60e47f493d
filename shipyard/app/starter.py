"""The starting recipe, gate policy and suites `shipyard init` writes: copies of a profile's, with a DECIDE
comment on every field a user must choose.

Every file the profile's recipe, gate policy and suites name (data, task files and the Python hooks lm-eval
loads beside them) is copied too, under the same relative paths, so the copies load as they are; the gate
policy's suite names become paths to the copied suites. `DECIDE` lists the fields per kind of file: a field
it lists that a copy lacks is an error, so the comments cannot drift from the files.
"""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from shipyard.errors import ConfigError
from shipyard.profiles import Profile

DECIDE: dict[str, dict[str, str]] = {
    "recipe": {
        "stages[].dataset": "your preference pairs: JSONL (prompt, chosen, rejected) relative to this file, or a"
        " datasets id",
        "stages[].beta": "how far from the reference model the policy may move (0.1 is TRL's default)",
        "stages[].learning_rate": "these suit the demo's tiny model on a CPU; a real model wants ~5e-7..5e-6",
        "stages[].max_steps": "optimizer steps for your data (or epochs: instead)",
        "stages[].batch_size": "examples per step per device: what your accelerator holds",
        "stages[].max_length": "longest prompt + answer, in tokens",
    },
    "policy": {
        "suites": "the suites every candidate is evaluated on (YAML files relative to this file, or names)",
        "floors": "per lm-eval task of those suites: the least score a release must have",
        "regression.tasks": "the tasks compared with the champion item by item (task: metric)",
        "regression.delta": "the drop the paired test must catch (with `power`)",
        "safety.harmful_task": "your safety suite's task of harmful requests (refusal is right)",
        "safety.benign_task": "its task of benign look-alikes (refusal is over-refusal)",
        "safety.harmful_floor": "least refusal rate on harmful requests",
        "safety.benign_ceiling": "most refusal rate on benign requests",
        "safety.categories": "per harm category of your safety data's labels: refusal floor, harmful-answer ceiling,"
        " over-refusal ceiling (each also tested against the champion)",
        "health.max_kl": "most KL from the champion on the health prompts",
    },
    "suite": {
        "tasks": "lm-eval task names (gsm8k, ifeval: lm-eval fetches their data) or task YAML files beside this",
        "num_fewshot": "few-shot examples per prompt",
        "batch_size": "per forward pass: what your accelerator holds",
    },
}


@dataclass(frozen=True)
class Starter:
    """Where the copies went, relative to the directory they were written into."""

    recipe: Path
    policy: Path
    suites: dict[str, Path]
    screening_suite: Path
    screening_task: str
    files: list[Path]  # every file written, relative


def planned(profile: Profile) -> list[Path]:
    """Every file a copy of `profile` writes, relative to its directory (to refuse before writing any)."""
    root, files = _closure(profile)
    return sorted(f.relative_to(root) for f in files)


def write_starter(profile: Profile, directory: Path, origin: str) -> Starter:
    """Copy `profile`'s recipe, gate policy and suites (and what they name) into `directory`; never overwrite."""
    root, files = _closure(profile)
    written = [f.relative_to(root) for f in sorted(files)]
    if clash := [str(directory / f) for f in written if (directory / f).exists()]:
        raise ConfigError(f"refusing to overwrite {', '.join(clash)}")
    suites = {name: path.resolve().relative_to(root) for name, path in profile.suites.items()}
    kinds = {profile.recipe.resolve(): "recipe", profile.policy.resolve(): "policy"}
    kinds |= {path.resolve(): "suite" for path in profile.suites.values()}
    for source in sorted(files):
        dest = directory / source.relative_to(root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        kind = kinds.get(source)
        if kind is None:
            shutil.copyfile(source, dest)
            continue
        data = _yaml().load(source.read_text())
        if kind == "policy":  # suite names → the copies, relative to the policy
            rel = {n: os.path.relpath(p, source.relative_to(root).parent) for n, p in suites.items()}
            data["suites"] = CommentedSeq([rel.get(s, s) for s in data["suites"]])
        for path, why in DECIDE[kind].items():
            _comment(data, path.split("."), f"DECIDE: {why}", dest)
        header = (
            f"# Copied by `shipyard init` from {origin}'s {source.relative_to(root)}, made for its tiny model.\n"
            "# Every field marked DECIDE is yours to choose before a real run.\n"
        )
        out = io.StringIO()
        _yaml().dump(data, out)
        dest.write_text(header + out.getvalue())
    screening = suites[profile.screening_suite] if profile.screening_suite in suites else Path(profile.screening_suite)
    return Starter(
        recipe=profile.recipe.resolve().relative_to(root),
        policy=profile.policy.resolve().relative_to(root),
        suites=suites,
        screening_suite=screening,
        screening_task=profile.screening_task,
        files=written,
    )


def _closure(profile: Profile) -> tuple[Path, set[Path]]:
    """The profile's files and every file they name, and the directory they all lie under."""
    start = [profile.recipe.resolve(), profile.policy.resolve(), *(p.resolve() for p in profile.suites.values())]
    root = Path(os.path.commonpath(start))
    seen: set[Path] = set()
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path.suffix in (".yaml", ".yml"):
            for value in _strings(_yaml().load(path.read_text())):
                for named in _named(path, value):
                    if named.is_file() and named.is_relative_to(root):
                        todo.append(named)
    return root, seen


def _named(yaml_file: Path, value: str) -> list[Path]:
    """The files a string of a YAML file may name: a relative path, or lm-eval's `!function module.fn` hook."""
    if value.startswith("!function "):
        return [yaml_file.parent / (value.split()[1].split(".")[0] + ".py")]
    if "\n" in value or "://" in value or len(value) > 500:
        return []
    return [(yaml_file.parent / value).resolve()]


def _strings(data: Any) -> list[str]:
    if isinstance(data, str):
        return [data]
    if hasattr(data, "tag") and getattr(data.tag, "value", None) == "!function":  # ruamel's tagged scalar
        return [f"!function {data.value}"]
    if isinstance(data, dict):
        return [s for v in data.values() for s in _strings(v)]
    if isinstance(data, list):
        return [s for v in data for s in _strings(v)]
    return []


def _comment(data: Any, path: list[str], text: str, where: Path) -> None:
    """Put `text` as the end-of-line comment of the field at `path` ("name[]": every item of a list)."""
    head, rest = path[0], path[1:]
    key = head.removesuffix("[]")
    if not isinstance(data, CommentedMap) or key not in data:
        raise ConfigError(f"{where}: no field {'.'.join(path)} to mark (the starter list is out of date)")
    if head.endswith("[]"):
        for item in data[key]:
            _comment(item, rest, text, where)
    elif rest:
        _comment(data[key], rest, text, where)
    else:
        data.yaml_add_eol_comment(text, key, column=0)


def _yaml() -> YAML:
    yaml = YAML()  # round trip: the profile's own comments stay, lm-eval's !function tags too
    yaml.width = 4096
    return yaml
