"""Sharded training checkpoints turned into a Hugging Face model directory: an intake stage before validation.

Reads, one batch of tensors at a time, and writes sharded safetensors (shards
of at most `convert.max_shard_bytes`, plus an index) under names the model's
config implies:

- torch DCP (NeMo-RL, prime-rl, torchtitan): `torch.distributed.checkpoint`'s
  own reader in this process (`no_dist`). Its `.metadata` is a pickle, so it
  is read with an unpickler that knows only DCP's metadata classes; every
  data file it names must lie in the checkpoint directory.
- veRL's FSDP per-rank shards (`model_world_size_<W>_rank_<R>.pt`): loaded
  with `torch.load(weights_only=True, mmap=True)`, each DTensor put back
  together along its placements (shards concatenated in rank order,
  replicas taken from rank 0).
- DeepSpeed ZeRO: DeepSpeed's own `zero_to_fp32`, where deepspeed is
  installed, in a child process whose every `torch.load` is forced to
  `weights_only` (`shipyard.intake.zero`);
- anything else (Megatron `torch_dist`), or ZeRO when `convert.command` is
  set: that command, with `{src}` and `{out}` filled in, run as a subprocess
  with its log kept; its output is then checked like any other.

Names are mapped to the config's: wrapper prefixes (`_orig_mod.`,
`module.`, FSDP's and activation checkpointing's) are dropped, then
`convert.renames` (regex, replacement) applied, then leading components
stripped or `model.` added until a name the config implies matches. A tensor
the config implies but the checkpoint lacks, or one of another shape, is
refused before anything is allocated. Config, generation config, tokenizer
and chat template come from the checkpoint's Hugging Face files or
`convert.base_model`. The written file is named by the source's digest, so a
conversion is done once; after a kill the next attempt keeps the shards
already finished (each appears by rename) and writes the rest. Memory is
bounded by two batches (`BATCH_BYTES` each, or the largest tensor if larger:
one being written while the next is read): the safetensors header is known
from the metadata before any tensor is read, so tensors are written as they
arrive. Called by the watcher after a snapshot.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol

import torch

from shipyard.caches import resumable
from shipyard.errors import InvalidCheckpoint

CONVERTER = ".converter"  # what a converter child (`shipyard.intake.zero`) made OUT with: read, then removed

INDEX = "model.safetensors.index.json"
BATCH_BYTES = 256 << 20  # two batches are in memory at once: one written, the next read
WRAPPERS = re.compile(r"(?:^|(?<=\.))(?:_orig_mod|module|_fsdp_wrapped_module|_checkpoint_wrapped_module)\.")
HF_SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)
RANK_FILE = re.compile(r"^model_world_size_(\d+)_rank_(\d+)\.pt$")
SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float8_e5m2: "F8_E5M2",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


@dataclass(frozen=True)
class Spec:
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        count = 1
        for n in self.shape:
            count *= n
        return count * self.dtype.itemsize


class Tensors(Protocol):
    """A sharded checkpoint's tensors: what each is, and a few of them at a time."""

    def specs(self) -> dict[str, Spec]: ...

    def load(self, names: list[str]) -> dict[str, torch.Tensor]: ...


@dataclass(frozen=True)
class Converted:
    path: Path
    converter: str  # what made it, with its version, for the lineage
    notes: list[str]


def convert(
    fmt: str,
    weights: Path,
    hf_files: list[Path],
    out: Path,
    renames: list[tuple[str, str]] = [],  # noqa: B006 (never mutated)
    max_shard_bytes: int = 5 * 10**9,
    command: str | None = None,
    log: Path | None = None,
) -> Converted:
    """Turn the `fmt` checkpoint in `weights` into a model directory at `out` (reused when already there).

    Config and tokenizer files come from the first of `hf_files` that holds each.
    """
    stamp = out / "conversion.json"
    if stamp.is_file():
        done = json.loads(stamp.read_text())
        return Converted(out, done["converter"], done["notes"])
    with resumable(out.parent / f".{out.name}.partial") as work:  # what a kill left there is resumed
        if stamp.is_file():  # converted by another process while this one waited
            done = json.loads(stamp.read_text())
            return Converted(out, done["converter"], done["notes"])
        building = work / "model"
        if fmt not in ("dcp", "fsdp-ranks"):  # only shipyard's own writer resumes shard by shard
            shutil.rmtree(building, ignore_errors=True)
        building.mkdir(exist_ok=True)
        notes: list[str] = []
        if fmt == "zero" and not command:  # DeepSpeed's own merge, unless a converter is configured
            _side_files(hf_files, building, weights)
            zero = [
                sys.executable,
                "-m",
                "shipyard.intake.zero",
                "{src}",
                "{out}",
                str(max_shard_bytes),
                json.dumps(renames),
            ]
            _run_command(shlex.join(zero), weights, building, log or work / "converter.log")
            converter = (building / CONVERTER).read_text()
            (building / CONVERTER).unlink()
        elif fmt in ("command", "zero"):
            if not command:
                raise InvalidCheckpoint(f"{weights}: no converter for this format; set convert.command")
            converter = _run_command(command, weights, building, log or work / "converter.log")
        elif fmt == "lora":
            converter = _merge_lora(weights, hf_files, building)
        else:
            _side_files(hf_files, building, weights)
            tensors: Tensors = DcpTensors(weights) if fmt == "dcp" else RankShards(weights)
            notes = write_model(tensors, building, renames, max_shard_bytes, weights)
            converter = f"shipyard ({fmt}) on torch {torch.__version__}"
        (building / "conversion.json").write_text(json.dumps({"converter": converter, "notes": notes}))
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            building.rename(out)
        except OSError:  # another process converted it first
            if not stamp.is_file():
                raise
    return Converted(out, converter, notes)


def write_model(
    tensors: Tensors, out: Path, renames: list[tuple[str, str]], max_shard_bytes: int, where: Path
) -> list[str]:
    """Write `tensors` (from `where`) as safetensors shards in `out`, which holds config.json, under its names."""
    from shipyard.intake.validation import expected_tensors

    expected = expected_tensors(out)
    specs = tensors.specs()
    chosen = match_names(specs, expected, renames, where)
    dtype = next(iter(expected.values()))[1]  # the config's
    written = {src: Spec(specs[src].shape, _target(specs[src].dtype, dtype)) for src in chosen.values()}
    # by name, as safetensors orders a file's tensors: a one-shard model is then byte for byte what
    # save_pretrained writes from the same tensors (veRL's merger, for one)
    ordered = sorted((hf, src, written[src]) for hf, src in chosen.items())
    shards = _plan_shards(ordered, max_shard_bytes)
    names = [
        "model.safetensors" if len(shards) == 1 else f"model-{n:05d}-of-{len(shards):05d}.safetensors"
        for n in range(1, len(shards) + 1)
    ]
    for stale in (set(out.glob("model*.safetensors")) - {out / name for name in names}) | set(out.glob("*.part")):
        stale.unlink()  # left by a kill, or by a conversion planned otherwise (another shard size)
    weight_map: dict[str, str] = {}
    for name, shard in zip(names, shards, strict=True):
        if not (out / name).is_file():  # a shard appears whole, by rename: one there was finished before a kill
            _write_shard(out / name, shard, tensors)
        weight_map |= dict.fromkeys((hf for hf, _, _ in shard), name)
    if len(shards) > 1:
        total = sum(spec.nbytes for _, _, spec in (t for shard in shards for t in shard))
        (out / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    wanted = {name for group in expected for name in group}
    ignored = sum(hf_name(source, renames, wanted) is None for source in specs)
    cast = sum(specs[src].dtype != spec.dtype for src, spec in written.items())
    notes = [f"{ignored} tensor(s) of the checkpoint are not the model's (optimizer state?), left out"] * bool(ignored)
    return notes + [f"{cast} tensor(s) cast to {dtype}, the dtype config.json names"] * bool(cast)


def _target(stored: torch.dtype, configured: torch.dtype) -> torch.dtype:
    """Floats are written in the config's dtype (as veRL's merger writes bfloat16); anything else as stored."""
    return configured if stored.is_floating_point and configured.is_floating_point else stored


def match_names(
    specs: dict[str, Spec],
    expected: dict[frozenset[str], tuple[tuple[int, ...], torch.dtype, str]],
    renames: list[tuple[str, str]],
    where: Path,
) -> dict[str, str]:
    """For each tensor the config implies: its name in the model and the checkpoint's name for it."""
    wanted = {name: group for group in expected for name in group}
    found: dict[frozenset[str], tuple[str, str]] = {}
    for source in specs:
        name = hf_name(source, renames, wanted.keys())
        if name is None:
            continue
        group = wanted[name]
        if group in found:
            continue  # tied names (lm_head and the embeddings) hold one tensor: it is written once
        shape, _, kept = expected[group]
        if specs[source].shape != shape:
            raise InvalidCheckpoint(
                f"{where}: tensor {source} has shape {list(specs[source].shape)}, config.json implies {list(shape)}"
            )
        found[group] = (kept, source)  # tied names are written once, under the name save_pretrained keeps
    missing = sorted(min(group) for group in expected if group not in found)
    if missing:
        raise InvalidCheckpoint(
            f"{where}: {len(missing)} of the {len(expected)} tensors config.json implies are not in the checkpoint"
            f" ({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''}); a rename table (convert.renames)"
            " maps other names"
        )
    return dict(found.values())


def hf_name(source: str, renames: list[tuple[str, str]], wanted: Any) -> str | None:
    """The model's name for a checkpoint tensor name, or None when it is not one of the model's."""
    name = WRAPPERS.sub("", source)
    for pattern, replacement in renames:
        name = re.sub(pattern, replacement, name)
    parts = name.split(".")
    for start in range(len(parts)):
        candidate = ".".join(parts[start:])
        if candidate in wanted:
            return candidate
        if f"model.{candidate}" in wanted:
            return f"model.{candidate}"
    return None


def _plan_shards(tensors: list[tuple[str, str, Spec]], max_shard_bytes: int) -> list[list[tuple[str, str, Spec]]]:
    shards: list[list[tuple[str, str, Spec]]] = [[]]
    size = 0
    for item in tensors:
        if shards[-1] and size + item[2].nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += item[2].nbytes
    return shards


def _write_shard(path: Path, shard: list[tuple[str, str, Spec]], tensors: Tensors) -> None:
    """A safetensors file whose header is written first, then each tensor's bytes as its batch is read."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for hf, _, spec in shard:
        header[hf] = {
            "dtype": SAFETENSORS_DTYPES[spec.dtype],
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + spec.nbytes],
        }
        offset += spec.nbytes
    body = json.dumps(header, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)
    batches = list(_batches(shard))
    part = path.with_name(f"{path.name}.part")
    with part.open("wb") as f, ThreadPoolExecutor(max_workers=1) as reader:  # read the next batch while writing
        f.write(len(body).to_bytes(8, "little") + body)
        pending = reader.submit(tensors.load, [source for _, source, _ in batches[0]]) if batches else None
        for i, batch in enumerate(batches):
            assert pending is not None
            loaded = pending.result()
            if i + 1 < len(batches):
                pending = reader.submit(tensors.load, [source for _, source, _ in batches[i + 1]])
            for _, source, spec in batch:
                _write_tensor(f, loaded.pop(source), spec)
    part.rename(path)


def _batches(shard: list[tuple[str, str, Spec]]) -> Iterator[list[tuple[str, str, Spec]]]:
    batch: list[tuple[str, str, Spec]] = []
    size = 0
    for item in shard:
        if batch and size + item[2].nbytes > BATCH_BYTES:
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item[2].nbytes
    if batch:
        yield batch


def _write_tensor(f: BinaryIO, tensor: torch.Tensor, spec: Spec) -> None:
    if tuple(tensor.shape) != spec.shape:
        raise InvalidCheckpoint(f"a tensor read back as {list(tensor.shape)}, its metadata said {list(spec.shape)}")
    f.write(tensor.to(spec.dtype).contiguous().reshape(-1).view(torch.uint8).numpy().data)


def _side_files(hf_files: list[Path], out: Path, weights: Path) -> None:
    """Config, tokenizer and chat template from the first of `hf_files` that holds each; config.json required."""
    for directory in reversed(hf_files):  # the first one holding a file wins
        _copy_side_files(directory, out)
    if not (out / "config.json").is_file():
        raise InvalidCheckpoint(
            f"{weights}: no config.json in the checkpoint, in the run (its root, an earlier checkpoint) or in"
            " convert.base_model: set convert.base_model to the model's directory"
        )


def _copy_side_files(hf_files: Path, out: Path) -> None:
    for name in HF_SIDE_FILES:
        if (hf_files / name).is_file() and not (hf_files / name).is_symlink():
            shutil.copyfile(hf_files / name, out / name)


def is_adapter(directory: Path) -> bool:
    """A PEFT adapter without full weights (a LoRA-only checkpoint)."""
    has_weights = any(p.name.startswith("model") and p.suffix == ".safetensors" for p in directory.iterdir())
    return (directory / "adapter_config.json").is_file() and not has_weights


def _merge_lora(adapter: Path, hf_files: list[Path], out: Path) -> str:
    """Merge a LoRA adapter into its base model: `convert.base_model`, else the local directory its config names."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    named = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path") or ""
    bases = [d for d in hf_files if d != adapter and (d / "config.json").is_file()]
    bases += [Path(named)] if named and (Path(named) / "config.json").is_file() else []
    if not bases:
        raise InvalidCheckpoint(
            f"{adapter}: a LoRA adapter of {named or 'an unnamed model'}, which is not a local model directory;"
            " set convert.base_model"
        )
    base = bases[0]
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto", trust_remote_code=False)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(out)
    for directory in (base, adapter):  # the adapter's own tokenizer files win
        _copy_side_files(directory, out)
    (out / "config.json").write_text(json.dumps(merged.config.to_dict(), indent=1))
    return f"peft {version('peft')} merge_and_unload onto {base}"


def _run_command(command: str, src: Path, out: Path, log: Path) -> str:
    """Run the configured converter; its log is kept beside the output; a failure is the checkpoint's reason."""
    argv = [part.replace("{src}", str(src)).replace("{out}", str(out)) for part in shlex.split(command)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, check=False)
        except OSError as exc:
            raise InvalidCheckpoint(f"{src}: converter {argv[0]} could not start ({exc})") from None
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise InvalidCheckpoint(f"{src}: converter exited {done.returncode}: {' | '.join(tail)} (log: {log})")
    return f"command: {command}"


class StateDict:
    """Tensors already in memory (a merge another library made)."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self.state = state

    def specs(self) -> dict[str, Spec]:
        return {k: Spec(tuple(t.shape), t.dtype) for k, t in self.state.items() if isinstance(t, torch.Tensor)}

    def load(self, names: list[str]) -> dict[str, torch.Tensor]:
        return {name: self.state[name] for name in names}


# --- torch DCP -------------------------------------------------------------------------------------------------

_DCP_METADATA = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in (
        "Metadata",
        "TensorStorageMetadata",
        "TensorProperties",
        "ChunkStorageMetadata",
        "BytesStorageMetadata",
        "MetadataIndex",
        "StorageMeta",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Size"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("collections", "OrderedDict"),
}


class _MetadataUnpickler(pickle.Unpickler):
    """DCP's `.metadata` is a pickle: only its own classes may be named in it, so no code from it can run."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _DCP_METADATA or (
            module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of DCP metadata")


class DcpTensors:
    """A DCP checkpoint directory, read in this process without a process group."""

    def __init__(self, path: Path) -> None:
        from torch.distributed.checkpoint.filesystem import FileSystemReader
        from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata

        self.path = path
        self.metadata: Metadata = _read_metadata(path)
        self.tensor_meta = {
            k: v for k, v in self.metadata.state_dict_metadata.items() if isinstance(v, TensorStorageMetadata)
        }
        metadata = self.metadata

        class Reader(FileSystemReader):
            def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
                return metadata  # read once, safely; never through pickle.load

        self.reader = Reader(str(path))

    def specs(self) -> dict[str, Spec]:
        return {k: Spec(tuple(v.size), v.properties.dtype) for k, v in self.tensor_meta.items()}

    def load(self, names: list[str]) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict_loader import load

        meta = self.tensor_meta
        state = {n: torch.empty(tuple(meta[n].size), dtype=meta[n].properties.dtype) for n in names}
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            load(state, storage_reader=self.reader, no_dist=True)
        return state


def _read_metadata(path: Path) -> Any:
    from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

    where = path / ".metadata"
    try:
        with where.open("rb") as f:
            metadata = _MetadataUnpickler(f).load()
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as exc:
        raise InvalidCheckpoint(f"{where}: not DCP metadata ({exc})") from None
    if not isinstance(metadata, Metadata):
        raise InvalidCheckpoint(f"{where}: not DCP metadata (a {type(metadata).__name__})")
    for info in (metadata.storage_data or {}).values():
        relative = str(getattr(info, "relative_path", ""))
        if not relative or PurePosixPath(relative).name != relative or relative in (".", ".."):
            raise InvalidCheckpoint(f"{where}: names data file {relative!r} outside the checkpoint directory")
    if getattr(metadata, "storage_meta", None) is None:
        metadata.storage_meta = StorageMeta()
    return metadata


# --- veRL FSDP per-rank shards ---------------------------------------------------------------------------------


class RankShards:
    """veRL's `model_world_size_<W>_rank_<R>.pt` files: each rank's DTensor shards, put back together."""

    def __init__(self, path: Path) -> None:
        ranks: dict[int, Path] = {}
        sizes = set()
        for file in sorted(path.iterdir()):
            if match := RANK_FILE.match(file.name):
                sizes.add(int(match[1]))
                ranks[int(match[2])] = file
        if len(sizes) != 1 or sorted(ranks) != list(range(next(iter(sizes), 0))):
            raise InvalidCheckpoint(f"{path}: rank files do not form one world (found ranks {sorted(ranks)})")
        self.path = path
        self.states = [_load_rank(ranks[r]) for r in sorted(ranks)]

    def specs(self) -> dict[str, Spec]:
        return {
            name: Spec(tuple(t.shape), t.dtype) for name, t in self.states[0].items() if isinstance(t, torch.Tensor)
        }

    def load(self, names: list[str]) -> dict[str, torch.Tensor]:
        return {name: self._merge(name) for name in names}

    def _merge(self, name: str) -> torch.Tensor:
        from torch.distributed.tensor import DTensor, Replicate, Shard

        first = self.states[0][name]
        if not isinstance(first, DTensor):
            return first
        placements = first.placements
        if len(placements) != 1:
            raise InvalidCheckpoint(f"{self.path}: {name} is sharded over a {len(placements)}-D mesh (not supported)")
        [placement] = placements
        if isinstance(placement, Replicate):
            return first.to_local()
        if not isinstance(placement, Shard):
            raise InvalidCheckpoint(f"{self.path}: {name} has placement {placement} (not supported)")
        return torch.cat([state[name].to_local() for state in self.states], dim=placement.dim)


def _load_rank(path: Path) -> dict[str, Any]:
    mesh_log = logging.getLogger("torch.distributed.device_mesh")  # warns that no process group exists: none is needed
    level, mesh_log.level = mesh_log.level, logging.ERROR
    try:
        with torch.serialization.safe_globals(_dtensor_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # weights_only refuses anything but tensors, DTensors and plain containers
        raise InvalidCheckpoint(f"{path}: refused by torch.load(weights_only=True): {exc}") from None
    finally:
        mesh_log.setLevel(level)
    if not isinstance(state, dict):
        raise InvalidCheckpoint(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def _dtensor_globals() -> list[Any]:
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard
    from torch.distributed.tensor._dtensor_spec import DTensorSpec, TensorMeta

    return [DTensor, DeviceMesh, DTensorSpec, TensorMeta, Shard, Replicate, Partial]
