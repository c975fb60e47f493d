"""Where checkpoints lie in an RL run's output, and when each one is complete.

Works on a listing of relative file paths, so every source (local directory,
S3 prefix, Hub repo) shares the same rules:

| layout | checkpoint directory | complete when |
| --- | --- | --- |
| transformers / TRL | `checkpoint-<step>/` | `trainer_state.json` (written last) exists |
| veRL | `global_step_<n>/actor/huggingface/` | `latest_checkpointed_iteration.txt` names n or later |
| OpenRLHF / DeepSpeed | `global_step<n>_hf/` | a DeepSpeed `latest` file names `global_step<m>`, m ≥ n |
| any `save_pretrained` dir | a directory with `config.json` | it holds a `COMPLETE` marker |
| a Hub revision per step | `@step-<n>/` (virtual, see `HubSource`) | the revision holds `config.json` |

Called by the watcher (`shipyard.watch`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

# Training state a trainer saves beside the weights: pickles that are never opened, copied or published.
TRAINER_STATE_PICKLES = frozenset({"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "scaler.pt"})

TRANSFORMERS = re.compile(r"(?:^|.*/)checkpoint-(\d+)$")
VERL = re.compile(r"(?:^|.*/)global_step_(\d+)/actor/huggingface$")
DEEPSPEED_HF = re.compile(r"(?:^|.*/)global_step(\d+)_hf$")
HUB_STEP = re.compile(r"^@step-(\d+)$")  # a Hub revision holding one step (see `shipyard.sources.HubSource`)
VERL_MARKER = "latest_checkpointed_iteration.txt"
DEEPSPEED_MARKER = "latest"
COMPLETE_MARKER = "COMPLETE"
TRAINER_STATE = "trainer_state.json"
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")


@dataclass(frozen=True)
class Found:
    """A checkpoint directory seen in a listing: its layout, step, and whether it is complete."""

    path: str  # relative to the source root, posix
    step: int
    layout: str
    complete: bool
    reason: str  # why it is incomplete; empty when complete


def find_checkpoints(files: Iterable[str], read_text: Callable[[str], str]) -> list[Found]:
    """Every checkpoint directory in `files` (relative posix paths), by step.

    `read_text` reads a small marker file of the source (veRL's and DeepSpeed's
    markers name the newest finished step).
    """
    listed = set(files)
    dirs = {str(PurePosixPath(f).parent) for f in listed}
    found: dict[str, Found] = {}
    verl_done = _marker_step(listed, VERL_MARKER, read_text, re.compile(r"^\s*(\d+)\s*$"))
    deepspeed_done = _marker_step(listed, DEEPSPEED_MARKER, read_text, re.compile(r"^\s*global_step(\d+)\s*$"))
    for d in sorted(dirs | _ancestors(dirs)):
        if match := TRANSFORMERS.match(d):
            complete = f"{d}/{TRAINER_STATE}" in listed
            found[d] = Found(
                d, int(match[1]), "transformers", complete, "" if complete else f"{TRAINER_STATE} not yet written"
            )
        elif match := VERL.match(d):
            found[d] = _by_marker(d, int(match[1]), "verl", verl_done, VERL_MARKER)
        elif match := DEEPSPEED_HF.match(d):
            found[d] = _openrlhf(d, int(match[1]), deepspeed_done, listed, dirs)
        elif match := HUB_STEP.match(d):
            complete = f"{d}/config.json" in listed
            found[d] = Found(d, int(match[1]), "hub", complete, "" if complete else "no config.json at that revision")
        elif f"{d}/{COMPLETE_MARKER}" in listed and f"{d}/config.json" in listed:
            found[d] = Found(d, _step_from_name(d), "marker", True, "")
    return sorted(_collisions(list(found.values())), key=lambda f: (f.step, f.path))


def _collisions(found: list[Found]) -> list[Found]:
    """Two directories of one series naming the same step (checkpoint-10, checkpoint-0010) are neither taken."""
    series: dict[tuple[str, str, int], list[Found]] = {}
    for f in found:
        series.setdefault((str(PurePosixPath(f.path).parent), f.layout, f.step), []).append(f)
    out = []
    for group in series.values():
        if len(group) == 1:
            out += group
            continue
        names = " and ".join(sorted(PurePosixPath(f.path).name for f in group))
        why = f"step {group[0].step} is claimed by both {names}; remove or rename one"
        out += [Found(f.path, f.step, f.layout, False, why) for f in group]
    return out


def numbered(path: str) -> tuple[str, int] | None:
    """For a checkpoint directory of a numbered layout, its series (the path up to the step digits) and step."""
    for pattern in (TRANSFORMERS, VERL, DEEPSPEED_HF):
        if match := pattern.match(path):
            return path[: match.start(1)], int(match[1])
    return None


def _by_marker(path: str, step: int, layout: str, done: int | None, marker: str) -> Found:
    if done is None:
        return Found(path, step, layout, False, f"no {marker} yet")
    if step > done:
        return Found(path, step, layout, False, f"{marker} names step {done}, this is step {step}")
    return Found(path, step, layout, True, "")


def _openrlhf(path: str, step: int, done: int | None, listed: set[str], dirs: set[str]) -> Found:
    """OpenRLHF's `global_step<N>_hf/`: it writes DeepSpeed's `latest` first, then weights, config, tokenizer last."""
    if not any(f"{path}/{name}" in listed for name in TOKENIZER_FILES):
        return Found(
            path, step, "deepspeed", False, "being written: no tokenizer files yet (OpenRLHF writes them last)"
        )
    if done is not None:
        return _by_marker(path, step, "deepspeed", done, DEEPSPEED_MARKER)
    parent = str(PurePosixPath(path).parent)
    later = [
        d for d in dirs if str(PurePosixPath(d).parent) == parent and (m := DEEPSPEED_HF.match(d)) and int(m[1]) > step
    ]
    if later:
        return Found(path, step, "deepspeed", True, "")
    why = f"no DeepSpeed {DEEPSPEED_MARKER} (saved with --disable_ds_ckpt?): taken once a later step appears"
    return Found(path, step, "deepspeed", False, why)


def _marker_step(listed: set[str], name: str, read_text: Callable[[str], str], pattern: re.Pattern[str]) -> int | None:
    steps = []
    for f in listed:
        if PurePosixPath(f).name == name and (match := pattern.match(read_text(f))):
            steps.append(int(match[1]))
    return max(steps, default=None)


def _ancestors(dirs: set[str]) -> set[str]:
    return {str(p) for d in dirs for p in PurePosixPath(d).parents if str(p) != "."}


def _step_from_name(path: str) -> int:
    digits = re.findall(r"\d+", PurePosixPath(path).name)
    return int(digits[-1]) if digits else 0
