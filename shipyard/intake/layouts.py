"""Where checkpoints lie in an RL run's output, and when each one is complete.

Works on a listing of relative file paths, so every source (local directory,
S3 prefix, Hub repo) shares the same rules:

| layout | checkpoint directory | complete when | weights |
| --- | --- | --- | --- |
| transformers / TRL | `checkpoint-<n>/` | `trainer_state.json` (written last) exists | HF |
| veRL, HF weights | `global_step_<n>/actor/huggingface/` | `latest_checkpointed_iteration.txt` names n or later | HF |
| veRL FSDP | `global_step_<n>/actor/` | the same | `model_world_size_<W>_rank_<R>.pt` |
| veRL Megatron | `global_step_<n>/actor/` | the same | `dist_ckpt/` (converter command) |
| OpenRLHF, HF weights | `global_step<n>_hf/` | DeepSpeed `latest` names m ≥ n, tokenizer written | HF |
| OpenRLHF / DeepSpeed ZeRO | `global_step<n>/` | DeepSpeed `latest` names m ≥ n | ZeRO shards (`zero_to_fp32`) |
| NeMo-RL | `step_<n>/` (`tmp_step_<n>/` while written) | the rename | `policy/weights/` DCP, or Megatron |
| prime-rl | `broadcasts/step_<n>/` | a `STABLE` marker | HF |
| prime-rl, DCP only | `step_<n>/trainer/` | DCP's `.metadata` (written last) | DCP |
| torchtitan | `step-<n>/` | DCP's `.metadata` | DCP |
| slime / Megatron | `iter_<n>/` | `latest_checkpointed_iteration.txt` names n or later | `torch_dist` (command) |
| open-instruct | `step_<n>/` holding `config.json` | a later step appears, or a `COMPLETE` marker | HF |
| any `save_pretrained` dir | a directory with `config.json` | it holds a `COMPLETE` marker | HF |
| a Hub revision per step | `@step-<n>/` (virtual, see `HubSource`) | the revision holds `config.json` | HF |

Where one step is found both with HF weights and in a training format, the HF
weights are taken and no conversion is needed. Called by the watcher
(`shipyard.intake.scan`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from shipyard.checkpoints import TRAINER_STATE

TRANSFORMERS = re.compile(r"(?:^|.*/)checkpoint-(\d+)$")
VERL = re.compile(r"(?:^|.*/)global_step_(\d+)/actor/huggingface$")
VERL_ACTOR = re.compile(r"(?:^|.*/)global_step_(\d+)/actor$")
DEEPSPEED_HF = re.compile(r"(?:^|.*/)global_step(\d+)_hf$")
DEEPSPEED = re.compile(r"(?:^|.*/)global_step(\d+)$")
PRIME_BROADCAST = re.compile(r"(?:^|.*/)broadcasts/step_(\d+)$")
PRIME_TRAINER = re.compile(r"(?:^|.*/)step_(\d+)/trainer$")
HF_FSDP = "pytorch_model_fsdp_0"  # the HF Trainer under FSDP with SHARDED_STATE_DICT: accelerate's DCP of {"model": …}
HF_SIDE = ("config.json", "generation_config.json", "tokenizer*", "special_tokens_map.json", "added_tokens.json")
STEP_DIR = re.compile(r"(?:^|.*/)(tmp_)?step_(\d+)$")  # NeMo-RL (renamed when done) or open-instruct
TORCHTITAN = re.compile(r"(?:^|.*/)step-(\d+)$")
MEGATRON = re.compile(r"(?:^|.*/)iter_(\d+)$")
HUB_STEP = re.compile(r"^@step-(\d+)$")  # a Hub revision holding one step (see `shipyard.intake.sources.HubSource`)
VERL_MARKER = "latest_checkpointed_iteration.txt"  # also Megatron's (slime)
DEEPSPEED_MARKER = "latest"
COMPLETE_MARKER = "COMPLETE"
STABLE_MARKER = "STABLE"
DCP_METADATA = ".metadata"
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")
RANK_FILE = re.compile(r"^model_world_size_\d+_rank_\d+\.pt$")


@dataclass(frozen=True)
class Found:
    """A checkpoint directory seen in a listing: its layout, step, whether it is complete, and how it is read."""

    path: str  # relative to the source root, posix
    step: int
    layout: str
    complete: bool
    reason: str  # why it is incomplete; empty when complete
    format: str = "hf"  # hf | dcp | fsdp-ranks | zero | command (see shipyard.intake.convert)
    weights: str = ""  # where the weights lie, relative to `path`
    hf_files: str = ""  # where config.json and the tokenizer lie, relative to `path`, if the checkpoint has them
    keep: tuple[str, ...] = ()  # patterns (relative to `path`) of the files a snapshot copies; empty: all


def find_checkpoints(files: Iterable[str], read_text: Callable[[str], str]) -> list[Found]:
    """Every checkpoint directory in `files` (relative posix paths), by step.

    `read_text` reads a small marker file of the source (veRL's, Megatron's and DeepSpeed's
    markers name the newest finished step).
    """
    listed = set(files)
    dirs = {str(PurePosixPath(f).parent) for f in listed}
    children = _children(listed)
    found: dict[str, Found] = {}
    verl_done = _marker_step(listed, VERL_MARKER, read_text, re.compile(r"^\s*(\d+)\s*$"))
    deepspeed_done = _marker_step(listed, DEEPSPEED_MARKER, read_text, re.compile(r"^\s*global_step(\d+)\s*$"))
    for d in sorted(dirs | _ancestors(dirs)):
        inside = children.get(d, set())
        if match := TRANSFORMERS.match(d):
            complete = f"{d}/{TRAINER_STATE}" in listed
            transformers = Found(
                d, int(match[1]), "transformers", complete, "" if complete else f"{TRAINER_STATE} not yet written"
            )
            if any(n.startswith(f"{HF_FSDP}/") for n in inside):  # weights sharded by rank; optimizer_0/ is not taken
                keep = (f"{HF_FSDP}/*", TRAINER_STATE, "chat_template.jinja", "vocab.json", "merges.txt", *HF_SIDE)
                hf_files = "." if "config.json" in inside else ""
                transformers = replace(transformers, format="dcp", weights=HF_FSDP, hf_files=hf_files, keep=keep)
            found[d] = transformers
        elif (match := VERL.match(d)) and _has_weights(inside):
            found[d] = _by_marker(d, int(match[1]), "verl", verl_done, VERL_MARKER)
        elif (match := VERL_ACTOR.match(d)) and (how := _verl_actor(inside)):
            verl = _by_marker(d, int(match[1]), "verl", verl_done, VERL_MARKER)
            found[d] = replace(verl, format=how[0], keep=how[1], hf_files="huggingface")
        elif match := DEEPSPEED_HF.match(d):
            found[d] = _openrlhf(d, int(match[1]), deepspeed_done, listed, dirs)
        elif (match := DEEPSPEED.match(d)) and any(n.endswith("_model_states.pt") for n in inside):
            zero = _by_marker(d, int(match[1]), "deepspeed", deepspeed_done, DEEPSPEED_MARKER)
            found[d] = replace(zero, format="zero")
        elif match := PRIME_BROADCAST.match(d):
            complete = f"{d}/{STABLE_MARKER}" in listed
            found[d] = Found(d, int(match[1]), "prime-rl", complete, "" if complete else "no STABLE marker yet")
        elif (match := PRIME_TRAINER.match(d)) and _is_dcp(inside):
            found[d] = _dcp(d, int(match[1]), "prime-rl", inside)
        elif match := STEP_DIR.match(d):
            if step_dir := _step_dir(d, int(match[2]), bool(match[1]), inside, dirs):
                found[d] = step_dir
        elif (match := TORCHTITAN.match(d)) and _is_dcp(inside):
            found[d] = _dcp(d, int(match[1]), "torchtitan", inside)
        elif (match := MEGATRON.match(d)) and "/policy/weights/" not in f"/{d}" and inside:
            megatron = _by_marker(d, int(match[1]), "megatron", verl_done, VERL_MARKER)
            found[d] = replace(megatron, format="command")
        elif match := HUB_STEP.match(d):
            complete = f"{d}/config.json" in listed
            found[d] = Found(d, int(match[1]), "hub", complete, "" if complete else "no config.json at that revision")
        elif f"{d}/{COMPLETE_MARKER}" in listed and f"{d}/config.json" in listed:
            found[d] = Found(d, _step_from_name(d), "marker", True, "")
    return sorted(_collisions(_prefer_hf(list(found.values()))), key=lambda f: (f.step, f.path))


def run_config(files: Iterable[str], found: Found, others: Iterable[Found]) -> str | None:
    """Where the run keeps the config of a checkpoint that holds none (`found.hf_files` empty): the nearest
    directory above it holding `config.json` (the run root, where a trainer saves its final model), else the
    earliest other checkpoint that has one; None when the run has none."""
    listed = set(files)
    for parent in PurePosixPath(found.path).parents:
        where = "" if str(parent) == "." else f"{parent}/"
        if f"{where}config.json" in listed:
            return str(parent)
    for other in sorted(others, key=lambda f: f.step):
        if other.hf_files or other.format == "hf":
            where = str(PurePosixPath(other.path) / (other.hf_files or "."))
            if f"{where}/config.json" in listed:
                return where
    return None


def _children(listed: set[str]) -> dict[str, set[str]]:
    """For every directory, the paths (relative to it) of every file below it."""
    below: dict[str, set[str]] = {}
    for f in listed:
        path = PurePosixPath(f)
        for parent in path.parents:
            if str(parent) != ".":
                below.setdefault(str(parent), set()).add(str(path.relative_to(parent)))
    return below


def _has_weights(inside: set[str]) -> bool:
    return any(n.endswith((".safetensors", ".bin")) and "/" not in n for n in inside)


def _is_dcp(inside: set[str]) -> bool:
    return DCP_METADATA in inside or any(n.endswith(".distcp") and "/" not in n for n in inside)


def _dcp(path: str, step: int, layout: str, inside: set[str]) -> Found:
    complete = DCP_METADATA in inside
    why = "" if complete else "DCP .metadata not yet written (it is written last)"
    return Found(path, step, layout, complete, why, format="dcp", keep=(DCP_METADATA, "*.distcp"))


def _verl_actor(inside: set[str]) -> tuple[str, tuple[str, ...]] | None:
    """How a veRL actor directory is read (format, files kept) when its `huggingface/` holds no weights."""
    if _has_weights({n.removeprefix("huggingface/") for n in inside if n.startswith("huggingface/")}):
        return None  # the huggingface/ directory is the checkpoint
    side = ("huggingface/*", "fsdp_config.json")
    if any(RANK_FILE.match(n) for n in inside):
        return "fsdp-ranks", ("model_world_size_*_rank_*.pt", *side)
    if any(n.startswith("dist_ckpt/") for n in inside):
        return "command", ("dist_ckpt/*", *side)
    return None


def _step_dir(path: str, step: int, temporary: bool, inside: set[str], dirs: set[str]) -> Found | None:
    """NeMo-RL's `step_<n>/` (written as `tmp_step_<n>/`, renamed when done) or open-instruct's `step_<n>/`."""
    weights = "policy/weights"
    if any(n.startswith(f"{weights}/") for n in inside):
        fmt = "dcp" if f"{weights}/{DCP_METADATA}" in inside else "command"
        keep = (f"{weights}/*", "policy/tokenizer/*", "config.yaml", "training_info.json")
        why = "being written: NeMo-RL renames tmp_step_<n> to step_<n> when done" if temporary else ""
        return Found(path, step, "nemo-rl", not temporary, why, fmt, weights, "policy/tokenizer", keep)
    if temporary or "config.json" not in inside:
        return None
    if COMPLETE_MARKER in inside or _later_step(path, step, dirs, STEP_DIR):
        return Found(path, step, "open-instruct", True, "")
    why = "no completion marker (open-instruct writes none): taken once a later step appears, or add COMPLETE"
    return Found(path, step, "open-instruct", False, why)


def _later_step(path: str, step: int, dirs: set[str], pattern: re.Pattern[str]) -> bool:
    parent = str(PurePosixPath(path).parent)
    return any(
        str(PurePosixPath(d).parent) == parent and (m := pattern.match(d)) and int(m.groups()[-1]) > step for d in dirs
    )


def _prefer_hf(found: list[Found]) -> list[Found]:
    """A step found with HF weights is not also taken from its training format."""
    hf_steps = {f.step for f in found if f.format == "hf"}
    return [f for f in found if f.format == "hf" or f.step not in hf_steps]


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
    for pattern in (TRANSFORMERS, VERL, VERL_ACTOR, DEEPSPEED_HF, DEEPSPEED, STEP_DIR, TORCHTITAN, MEGATRON):
        if match := pattern.match(path):
            group = len(match.groups())
            return path[: match.start(group)], int(match[group])
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
    if _later_step(path, step, dirs, DEEPSPEED_HF):
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
