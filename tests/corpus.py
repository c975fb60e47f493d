"""A run directory holding every hostile checkpoint the watcher must refuse, and the reason each must get."""

import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from .helpers import make_checkpoint


class Payload:
    """A pickle that, if ever unpickled without weights_only, leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _truncated(ckpt: Path, outside: Path) -> None:
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])


def _missing_shard(ckpt: Path, outside: Path) -> None:
    AutoModelForCausalLM.from_pretrained(ckpt).save_pretrained(ckpt, max_shard_size="400KB")
    (ckpt / "model.safetensors").unlink(missing_ok=True)
    shards = sorted(ckpt.glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[1].unlink()


def _huge_header(ckpt: Path, outside: Path) -> None:
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[:8] = (1 << 40).to_bytes(8, "little")
    (ckpt / "model.safetensors").write_bytes(bytes(data))


def _nan(ckpt: Path, outside: Path) -> None:
    weights = load_file(ckpt / "model.safetensors")
    weights["model.layers.1.mlp.up_proj.weight"][0, :12] = float("nan")
    save_file(weights, ckpt / "model.safetensors", metadata={"format": "pt"})


def _wrong_shape(ckpt: Path, outside: Path) -> None:
    config = json.loads((ckpt / "config.json").read_text())
    config["intermediate_size"] = 64
    (ckpt / "config.json").write_text(json.dumps(config))


def _pickle_payload(ckpt: Path, outside: Path) -> None:
    (ckpt / "model.safetensors").unlink()
    (ckpt / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(outside / "payload-ran")))


def _symlink_out(ckpt: Path, outside: Path) -> None:
    shutil.copy(ckpt / "model.safetensors", outside / "elsewhere.safetensors")
    (ckpt / "model.safetensors").unlink()
    (ckpt / "model.safetensors").symlink_to(outside / "elsewhere.safetensors")


def _index_escape(ckpt: Path, outside: Path) -> None:
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "../evil.safetensors"}}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))


def _not_utf8(ckpt: Path, outside: Path) -> None:
    (ckpt / os.fsdecode(b"notes-\xff.txt")).write_text("latin-1 bytes in the name")


def _own_code(ckpt: Path, outside: Path) -> None:
    config = json.loads((ckpt / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (ckpt / "config.json").write_text(json.dumps(config))
    (ckpt / "modeling_evil.py").write_text(f"open({str(outside / 'payload-ran')!r}, 'w').close()\n")


def _inf_bf16(ckpt: Path, outside: Path) -> None:
    weights = {k: v.to(torch.bfloat16) for k, v in load_file(ckpt / "model.safetensors").items()}
    weights["model.layers.0.self_attn.q_proj.weight"][1, :3] = float("inf")
    save_file(weights, ckpt / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((ckpt / "config.json").read_text())
    config["dtype"] = "bfloat16"
    (ckpt / "config.json").write_text(json.dumps(config))


def _endless_template(ckpt: Path, outside: Path) -> None:
    loops = "{% for a in range(99999) %}{% for b in range(99999) %}{{ a * b }}{% endfor %}{% endfor %}"
    (ckpt / "tokenizer_config.json").write_text(json.dumps({"chat_template": loops}))


# name -> (how the checkpoint is spoiled, the pattern its recorded reason must match; {ckpt} is its directory name)
HOSTILE: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "truncated": (_truncated, r"{ckpt}/model.safetensors: not a valid safetensors file"),
    "missing shard": (
        _missing_shard,
        r"{ckpt}/model-00002-of-\d+\.safetensors: missing \(named in model.safetensors.index.json\)",
    ),
    "huge header": (_huge_header, r"{ckpt}/model.safetensors: not a valid safetensors file"),
    "NaN weights": (_nan, r"tensor model.layers.1.mlp.up_proj.weight has 12 NaN values"),
    "config disagrees": (_wrong_shape, r"model.layers.0.mlp.(gate|up|down)_proj.weight has shape \[\d+, \d+\], config"),
    "pickle payload": (_pickle_payload, r"pytorch_model.bin: pickle weights refused"),
    "symlink out": (_symlink_out, r"{ckpt}/model.safetensors: a symbolic link; run files are opened without following"),
    "index escapes": (_index_escape, r"shard name '../evil.safetensors' escapes the checkpoint directory"),
    "name not UTF-8": (_not_utf8, r"{ckpt}/'notes-\\udcff.txt': file name is not valid UTF-8"),
    "own code": (_own_code, r"config.json: names its own code \(auto_map\); Shipyard never runs code"),
    "Inf in bf16": (_inf_bf16, r"tensor model.layers.0.self_attn.q_proj.weight has 3 Inf values"),
    "endless template": (_endless_template, r"chat template does not render a short conversation within 5 s of CPU"),
}


def write_hostile(run: Path, outside: Path, model_dir: Path, first_step: int) -> dict[str, int]:
    """One spoiled checkpoint per HOSTILE case under `run`, from `first_step` on; each case's step.

    Anything a checkpoint manages to run leaves `outside / "payload-ran"`.
    """
    steps = {}
    for step, (name, (spoil, _)) in enumerate(HOSTILE.items(), first_step):
        spoil(make_checkpoint(run, step, model_dir), outside)
        steps[name] = step
    return steps
