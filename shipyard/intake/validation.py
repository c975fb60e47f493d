"""Validation of a checkpoint directory before anything uses it.

Checks, in order, and raises `InvalidCheckpoint` with a reason a person can act
on: file names and symlinks stay inside the directory; sizes are sane; every
shard named by `model.safetensors.index.json` is present and named safely;
every safetensors header parses; tensor shapes agree with `config.json`,
and dtypes too where loading would fail (a float tensor in another float
dtype than the config's is loaded and cast by transformers, as veRL's float32
weights under a bfloat16 config are: tolerated, and said in the returned
notes); no tensor holds NaN or Inf. No code from the checkpoint runs: a config
or tokenizer config with `auto_map` is refused, and transformers is called
with `trust_remote_code=False`. Safetensors are checked one tensor at a time
from their headers and bytes: the NaN/Inf test reads each tensor's bytes in
bounded chunks and tests the exponent bits, so memory stays flat whatever the
model's size. Pickle weights (`.bin`, `.pt`) are refused unless allowed, and
then loaded only with `weights_only=True`. Trainer state pickles
(`optimizer.pt`, `training_args.bin`, …) are never opened. Called by the
watcher on the snapshot copy, never on the trainer's live files.
"""

from __future__ import annotations

import json
import os
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from shipyard.checkpoints import is_trainer_pickle
from shipyard.errors import InvalidCheckpoint
from shipyard.intake.chat_templates import check_chat_templates

INDEX = "model.safetensors.index.json"
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth")
MAX_FILE_BYTES = 1 << 40
CHUNK_BYTES = 16 << 20  # the NaN/Inf scan reads at most this much of a tensor at once
# safetensors dtype -> (torch dtype, unsigned view of its width, exponent mask, mantissa mask); masks for floats only
DTYPES: dict[str, tuple[torch.dtype, type, int, int]] = {
    "F64": (torch.float64, np.uint64, 0x7FF0000000000000, 0x000FFFFFFFFFFFFF),
    "F32": (torch.float32, np.uint32, 0x7F800000, 0x007FFFFF),
    "F16": (torch.float16, np.uint16, 0x7C00, 0x03FF),
    "BF16": (torch.bfloat16, np.uint16, 0x7F80, 0x007F),
    "F8_E5M2": (torch.float8_e5m2, np.uint8, 0x7C, 0x03),
    "F8_E4M3": (torch.float8_e4m3fn, np.uint8, 0x7F, 0x00),  # no Inf; 0x7F/0xFF is NaN
    "I64": (torch.int64, np.uint64, 0, 0),
    "I32": (torch.int32, np.uint32, 0, 0),
    "I16": (torch.int16, np.uint16, 0, 0),
    "I8": (torch.int8, np.uint8, 0, 0),
    "U8": (torch.uint8, np.uint8, 0, 0),
    "BOOL": (torch.bool, np.uint8, 0, 0),
}


def validate_checkpoint(
    root: Path, allow_pickle_weights: bool = False, max_file_bytes: int = MAX_FILE_BYTES
) -> list[str]:
    """Raise `InvalidCheckpoint` unless `root` is a usable model directory; what was tolerated, as notes."""
    files = _safe_files(root, max_file_bytes)
    shards = _safetensors_files(root, files)
    pickles = [f for f in files if f.endswith(PICKLE_WEIGHT_SUFFIXES) and not is_trainer_pickle(PurePosixPath(f).name)]
    if not shards and not pickles:
        raise InvalidCheckpoint(f"{root}: no weight files (*.safetensors)")
    if pickles and not shards and not allow_pickle_weights:
        raise InvalidCheckpoint(f"{root / pickles[0]}: pickle weights refused; convert to safetensors or allow them")
    _refuse_remote_code(root)
    check_chat_templates(root)
    expected = expected_tensors(root)
    if shards:
        headers = dict(_safetensors_headers(root, shards))
        notes = _check_against_config(root, {k: (shape, dtype) for k, (shape, dtype, _) in headers.items()}, expected)
        _check_finite(root, headers)
        return notes
    tensors = dict(_read_pickles(root, pickles))
    notes = _check_against_config(root, {k: (tuple(t.shape), t.dtype) for k, t in tensors.items()}, expected)
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and (bad := int((~torch.isfinite(tensor)).sum())):
            kind = "NaN" if torch.isnan(tensor).any() else "Inf"
            raise InvalidCheckpoint(f"{root}: tensor {name} has {bad} {kind} values")
    return notes


def _refuse_remote_code(root: Path) -> None:
    """A config that names its own code (`auto_map`) is refused: Shipyard never runs code from a checkpoint."""
    for name in ("config.json", "tokenizer_config.json"):
        path = root / name
        try:
            data = json.loads(path.read_text()) if path.is_file() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidCheckpoint(f"{path}: not valid JSON ({exc})") from None
        if isinstance(data, dict) and "auto_map" in data:
            raise InvalidCheckpoint(
                f"{path}: names its own code (auto_map); Shipyard never runs code from a checkpoint"
            )


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


def _safetensors_headers(
    root: Path, shards: list[str]
) -> Iterator[tuple[str, tuple[tuple[int, ...], torch.dtype, tuple[Path, str, int, int]]]]:
    """Each tensor's shape, dtype and where its bytes lie (file, safetensors dtype, start, end), from the headers."""
    for shard in shards:
        path = root / shard
        try:
            with safe_open(path, framework="pt"):  # validates the header and offsets
                pass
            with path.open("rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length))
        except (SafetensorError, OSError, ValueError, RuntimeError, struct.error) as exc:
            raise InvalidCheckpoint(f"{path}: not a valid safetensors file ({exc})") from None
        for key, info in header.items():
            if key == "__metadata__":
                continue
            if info["dtype"] not in DTYPES:
                raise InvalidCheckpoint(f"{path}: tensor {key} has dtype {info['dtype']}, which Shipyard cannot check")
            start, end = info["data_offsets"]
            where = (path, info["dtype"], 8 + length + start, 8 + length + end)
            yield key, (tuple(info["shape"]), DTYPES[info["dtype"]][0], where)


def _check_finite(
    root: Path, headers: dict[str, tuple[tuple[int, ...], torch.dtype, tuple[Path, str, int, int]]]
) -> None:
    """No float tensor holds NaN or Inf: the exponent bits of each value, read in bounded chunks."""
    for name, (_, _, (path, kind, start, end)) in headers.items():
        _, view, exponent, mantissa = DTYPES[kind]
        if not exponent:
            continue
        nan = inf = 0
        width = np.dtype(view).itemsize
        step = CHUNK_BYTES - CHUNK_BYTES % width
        with path.open("rb") as f:
            f.seek(start)
            for offset in range(start, end, step):
                values: np.ndarray = np.frombuffer(f.read(min(step, end - offset)), dtype=view)
                special = (values & view(exponent)) == view(exponent)
                if special.any():
                    hits = values[special]
                    nans = int(np.count_nonzero(hits & view(mantissa))) if mantissa else len(hits)
                    nan, inf = nan + nans, inf + len(hits) - nans
        if nan or inf:
            raise InvalidCheckpoint(f"{root}: tensor {name} has {nan + inf} {'NaN' if nan else 'Inf'} values")


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


def expected_tensors(root: Path) -> dict[frozenset[str], tuple[tuple[int, ...], torch.dtype, str]]:
    """Tensor shapes and dtype the config implies, grouped by tied names (any name of a group will do), with the
    name `save_pretrained` keeps for the group (the first registered)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(root, local_files_only=True, trust_remote_code=False)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError for bad configs
        raise InvalidCheckpoint(f"{root / 'config.json'}: cannot build the model it describes ({exc})") from None
    groups: dict[int, tuple[list[str], torch.Tensor]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), ([], tensor))[0].append(name)
    dtype = getattr(config, "dtype", None) or torch.float32
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return {frozenset(names): (tuple(t.shape), dtype, names[0]) for names, t in groups.values()}


def _check_against_config(
    root: Path,
    tensors: dict[str, tuple[tuple[int, ...], torch.dtype]],
    expected: dict[frozenset[str], tuple[tuple[int, ...], torch.dtype, str]],
) -> list[str]:
    """Refuse what loading would refuse (a missing tensor, another shape, float against integer); note the rest."""
    cast: list[str] = []
    for names, (shape, dtype, _) in expected.items():
        present = sorted(names & tensors.keys())
        if not present:
            raise InvalidCheckpoint(f"{root}: tensor {min(names)} missing (config.json expects {list(shape)})")
        found_shape, found_dtype = tensors[present[0]]
        if found_shape != shape:
            raise InvalidCheckpoint(
                f"{root}: tensor {present[0]} has shape {list(found_shape)}, config.json implies {list(shape)}"
            )
        if found_dtype != dtype:
            if not (found_dtype.is_floating_point and dtype.is_floating_point):
                raise InvalidCheckpoint(f"{root}: tensor {present[0]} is {found_dtype}, config.json says {dtype}")
            cast.append(f"{found_dtype} under a config that says {dtype}")
    return [f"{n} tensor(s) stored as {kind}; transformers casts them on load" for kind, n in Counter(cast).items()]
