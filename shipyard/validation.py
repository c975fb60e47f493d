"""Validation of a checkpoint directory before anything uses it.

Checks, in order, and raises `InvalidCheckpoint` with a reason a person can act
on: file names and symlinks stay inside the directory; sizes are sane; every
shard named by `model.safetensors.index.json` is present and named safely;
every safetensors header parses; tensor shapes and dtypes agree with
`config.json`; no tensor holds NaN or Inf. Pickle weights (`.bin`, `.pt`) are
refused unless allowed, and then loaded only with `weights_only=True`. Trainer
state pickles (`optimizer.pt`, `training_args.bin`, …) are never opened.
Called by the watcher on the snapshot copy, never on the trainer's live files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import torch
from safetensors import SafetensorError, safe_open

from shipyard.errors import InvalidCheckpoint

INDEX = "model.safetensors.index.json"
TRAINER_STATE_PICKLES = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "scaler.pt"}
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth")
MAX_FILE_BYTES = 1 << 40


def validate_checkpoint(root: Path, allow_pickle_weights: bool = False, max_file_bytes: int = MAX_FILE_BYTES) -> None:
    """Raise `InvalidCheckpoint` unless `root` is a usable model directory."""
    files = _safe_files(root, max_file_bytes)
    shards = _safetensors_files(root, files)
    pickles = [
        f for f in files if f.endswith(PICKLE_WEIGHT_SUFFIXES) and PurePosixPath(f).name not in TRAINER_STATE_PICKLES
    ]
    if not shards and not pickles:
        raise InvalidCheckpoint(f"{root}: no weight files (*.safetensors)")
    if pickles and not shards and not allow_pickle_weights:
        raise InvalidCheckpoint(f"{root / pickles[0]}: pickle weights refused; convert to safetensors or allow them")
    expected = _expected_tensors(root)
    tensors = dict(_read_safetensors(root, shards))
    if not shards:
        tensors = dict(_read_pickles(root, pickles))
    _check_against_config(root, tensors, expected)


def _safe_files(root: Path, max_file_bytes: int) -> list[str]:
    real_root = root.resolve()
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                raise InvalidCheckpoint(f"{path}: symlink points outside the checkpoint ({os.readlink(path)})")
        for name in filenames:
            path = Path(dirpath) / name
            if path.stat().st_size > max_file_bytes:
                raise InvalidCheckpoint(f"{path}: {path.stat().st_size} bytes, above the limit of {max_file_bytes}")
            files.append(path.relative_to(root).as_posix())
    return sorted(files)


def _safetensors_files(root: Path, files: list[str]) -> list[str]:
    if INDEX not in files:
        return [f for f in files if f.endswith(".safetensors")]
    try:
        weight_map = json.loads((root / INDEX).read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidCheckpoint(f"{root / INDEX}: not a safetensors index ({exc})") from None
    for name in names:
        if not isinstance(name, str) or PurePosixPath(name).name != name or name in ("", ".", ".."):
            raise InvalidCheckpoint(f"{root / INDEX}: shard name {name!r} escapes the checkpoint directory")
        if name not in files:
            raise InvalidCheckpoint(f"{root / name}: missing (named in {INDEX})")
    return names


def _read_safetensors(root: Path, shards: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    for shard in shards:
        path = root / shard
        try:
            with safe_open(path, framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    yield key, f.get_tensor(key)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise InvalidCheckpoint(f"{path}: not a valid safetensors file ({exc})") from None


def _read_pickles(root: Path, files: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    for name in files:
        path = root / name
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # weights_only refuses anything but tensors and plain containers
            raise InvalidCheckpoint(f"{path}: refused by torch.load(weights_only=True): {exc}") from None
        if not isinstance(state, dict):
            raise InvalidCheckpoint(f"{path}: expected a state dict, found {type(state).__name__}")
        yield from ((k, v) for k, v in state.items() if isinstance(v, torch.Tensor))


def _expected_tensors(root: Path) -> dict[frozenset[str], tuple[tuple[int, ...], torch.dtype]]:
    """Tensor shapes and dtype the config implies, grouped by tied names (any name of a group will do)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(root, local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError for bad configs
        raise InvalidCheckpoint(f"{root / 'config.json'}: cannot build the model it describes ({exc})") from None
    groups: dict[int, tuple[set[str], torch.Tensor]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), (set(), tensor))[0].add(name)
    dtype = getattr(config, "dtype", None) or torch.float32
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return {frozenset(names): (tuple(t.shape), dtype) for names, t in groups.values()}


def _check_against_config(
    root: Path, tensors: dict[str, torch.Tensor], expected: dict[frozenset[str], tuple[tuple[int, ...], torch.dtype]]
) -> None:
    for names, (shape, dtype) in expected.items():
        present = sorted(names & tensors.keys())
        if not present:
            raise InvalidCheckpoint(f"{root}: tensor {min(names)} missing (config.json expects {list(shape)})")
        tensor = tensors[present[0]]
        if tuple(tensor.shape) != shape:
            raise InvalidCheckpoint(
                f"{root}: tensor {present[0]} has shape {list(tensor.shape)}, config.json implies {list(shape)}"
            )
        if tensor.dtype != dtype:
            raise InvalidCheckpoint(f"{root}: tensor {present[0]} is {tensor.dtype}, config.json says {dtype}")
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and (bad := int((~torch.isfinite(tensor)).sum())):
            kind = "NaN" if torch.isnan(tensor).any() else "Inf"
            raise InvalidCheckpoint(f"{root}: tensor {name} has {bad} {kind} values")
