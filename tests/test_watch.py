"""Scanning a local run: completion rules, snapshots, and a corpus of bad checkpoints."""

import json
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from shipyard.sources import LocalSource, open_source
from shipyard.watch import Checkpoint, scan

from .helpers import make_checkpoint

STATE = {"log_history": [{"step": 0, "reward": 0.5}]}


class Payload:
    """A pickle that, if ever unpickled without weights_only, leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def by_step(seen: list[Checkpoint]) -> dict[int, Checkpoint]:
    return {c.step: c for c in seen}


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, Path]:
    run = tmp_path_factory.mktemp("run")
    outside = tmp_path_factory.mktemp("outside")
    marker = outside / "payload-ran"
    make_checkpoint(run, 1, tiny_model_dir)  # good

    ckpt = make_checkpoint(run, 2, tiny_model_dir)  # truncated
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])

    ckpt = make_checkpoint(run, 3, tiny_model_dir, max_shard_size="400KB")  # missing shard
    shards = sorted(ckpt.glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[1].unlink()

    ckpt = make_checkpoint(run, 4, tiny_model_dir)  # huge header length
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[:8] = (1 << 40).to_bytes(8, "little")
    (ckpt / "model.safetensors").write_bytes(bytes(data))

    ckpt = make_checkpoint(run, 5, tiny_model_dir)  # NaN weights
    weights = load_file(ckpt / "model.safetensors")
    weights["model.layers.1.mlp.up_proj.weight"][0, :12] = float("nan")
    save_file(weights, ckpt / "model.safetensors", metadata={"format": "pt"})

    ckpt = make_checkpoint(run, 6, tiny_model_dir)  # config disagrees with the weights
    config = json.loads((ckpt / "config.json").read_text())
    config["intermediate_size"] = 64
    (ckpt / "config.json").write_text(json.dumps(config))

    ckpt = make_checkpoint(run, 7, tiny_model_dir)  # pickle weights carrying a payload
    (ckpt / "model.safetensors").unlink()
    (ckpt / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker)))

    ckpt = make_checkpoint(run, 8, tiny_model_dir)  # symlink out of the directory
    shutil.copy(ckpt / "model.safetensors", outside / "elsewhere.safetensors")
    (ckpt / "model.safetensors").unlink()
    (ckpt / "model.safetensors").symlink_to(outside / "elsewhere.safetensors")

    ckpt = make_checkpoint(run, 9, tiny_model_dir)  # ../ in an index
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "../evil.safetensors"}}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))

    ckpt = make_checkpoint(run, 10, tiny_model_dir)  # still being written
    (ckpt / "trainer_state.json").unlink()

    make_checkpoint(run, 11, tiny_model_dir)  # good, after all the bad ones

    ckpt = make_checkpoint(run, 12, tiny_model_dir)  # a file name that is not UTF-8
    (ckpt / os.fsdecode(b"notes-\xff.txt")).write_text("latin-1 bytes in the name")

    ckpt = make_checkpoint(run, 13, tiny_model_dir)  # a config that names its own code
    config = json.loads((ckpt / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (ckpt / "config.json").write_text(json.dumps(config))
    (ckpt / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")

    ckpt = make_checkpoint(run, 14, tiny_model_dir)  # float32 weights under a bfloat16 config, as veRL saves them
    config = json.loads((ckpt / "config.json").read_text())
    config["dtype"] = "bfloat16"
    (ckpt / "config.json").write_text(json.dumps(config))

    ckpt = make_checkpoint(run, 15, tiny_model_dir)  # Inf, in bfloat16
    weights = {k: v.to(torch.bfloat16) for k, v in load_file(ckpt / "model.safetensors").items()}
    weights["model.layers.0.self_attn.q_proj.weight"][1, :3] = float("inf")
    save_file(weights, ckpt / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((ckpt / "config.json").read_text())
    config["dtype"] = "bfloat16"
    (ckpt / "config.json").write_text(json.dumps(config))

    ckpt = make_checkpoint(run, 16, tiny_model_dir)  # a chat template that would run for hours
    loops = "{% for a in range(99999) %}{% for b in range(99999) %}{{ a * b }}{% endfor %}{% endfor %}"
    (ckpt / "tokenizer_config.json").write_text(json.dumps({"chat_template": loops}))
    return run, marker


@pytest.fixture(scope="module")
def scanned(bad_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[int, Checkpoint]:
    run, _ = bad_run
    return by_step(scan(open_source(str(run)), tmp_path_factory.mktemp("cache")))


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        (2, r"checkpoint-2/model.safetensors: not a valid safetensors file"),
        (3, r"checkpoint-3/model-00002-of-\d+\.safetensors: missing \(named in model.safetensors.index.json\)"),
        (4, r"checkpoint-4/model.safetensors: not a valid safetensors file"),
        (5, r"tensor model.layers.1.mlp.up_proj.weight has 12 NaN values"),
        (6, r"tensor model.layers.0.mlp.(gate|up|down)_proj.weight has shape \[\d+, \d+\], config.json implies"),
        (7, r"pytorch_model.bin: pickle weights refused"),
        (8, r"checkpoint-8/model.safetensors: points outside the checkpoint"),
        (9, r"shard name '../evil.safetensors' escapes the checkpoint directory"),
        (12, r"checkpoint-12/'notes-\\udcff.txt': file name is not valid UTF-8"),
        (13, r"config.json: names its own code \(auto_map\); Shipyard never runs code from a checkpoint"),
        (15, r"tensor model.layers.0.self_attn.q_proj.weight has 3 Inf values"),
        (16, r"tokenizer_config.json: chat template does not render a short conversation within 5 s of CPU"),
    ],
)
def test_bad_checkpoint_is_refused_with_its_reason(scanned: dict[int, Checkpoint], step: int, reason: str) -> None:
    assert scanned[step].state == "invalid"
    assert re.search(reason, scanned[step].reason), scanned[step].reason


def test_bad_checkpoints_do_not_stop_the_scan(scanned: dict[int, Checkpoint]) -> None:
    assert sorted(scanned) == list(range(1, 17))
    assert scanned[1].state == scanned[11].state == scanned[14].state == "complete"  # 14: float32 under bf16
    assert scanned[10].state == "incomplete"
    assert "trainer_state.json not yet written" in scanned[10].reason


def test_pickle_payload_never_runs_even_when_pickles_are_allowed(bad_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, marker = bad_run
    seen = by_step(scan(open_source(str(run)), tmp_path / "cache", allow_pickle_weights=True))
    assert seen[7].state == "invalid"
    assert "weights_only=True" in seen[7].reason
    assert not marker.exists()


def test_good_checkpoint_is_snapshotted_with_digests_and_metrics(
    scanned: dict[int, Checkpoint], bad_run: tuple[Path, Path]
) -> None:
    good = scanned[11]
    snapshot = Path(good.path)
    assert set(good.files) == {p.name for p in snapshot.iterdir()}
    assert "optimizer.pt" not in good.files
    assert good.metrics == {"reward": 0.11}
    assert good.uri == f"{bad_run[0].as_uri()}/checkpoint-11"
    assert good.run_id == bad_run[0].name
    weights = load_file(snapshot / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_unchanged_files_are_stored_once(scanned: dict[int, Checkpoint]) -> None:
    first, last = scanned[1], scanned[11]
    assert first.files["tokenizer.json"] == last.files["tokenizer.json"]
    assert first.digest != last.digest  # trainer_state differs
    blob = Path(first.path) / "tokenizer.json"
    assert blob.stat().st_ino == (Path(last.path) / "tokenizer.json").stat().st_ino


def test_snapshot_survives_rotation_of_the_source(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    ckpt = make_checkpoint(run, 1, tiny_model_dir)
    seen = scan(open_source(str(run)), tmp_path / "cache")
    shutil.rmtree(ckpt)
    assert (Path(seen[0].path) / "model.safetensors").is_file()
    assert AutoModelForCausalLM.from_pretrained(seen[0].path) is not None


def test_other_layouts_follow_their_markers(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    for step in (10, 20):
        shutil.copytree(tiny_model_dir, run / "verl" / f"global_step_{step}" / "actor" / "huggingface")
        shutil.copytree(tiny_model_dir, run / "openrlhf" / f"global_step{step}_hf")
    (run / "verl" / "latest_checkpointed_iteration.txt").write_text("10")
    (run / "openrlhf" / "_actor").mkdir()
    (run / "openrlhf" / "_actor" / "latest").write_text("global_step20")
    shutil.copytree(tiny_model_dir, run / "exported")
    (run / "exported" / "COMPLETE").touch()
    shutil.copytree(tiny_model_dir, run / "unmarked")
    seen = {(c.layout, c.step): c.state for c in scan(open_source(str(run)), tmp_path / "cache")}
    assert seen == {
        ("verl", 10): "complete",
        ("verl", 20): "incomplete",
        ("deepspeed", 10): "complete",
        ("deepspeed", 20): "complete",
        ("marker", 0): "complete",
    }


def test_two_directories_naming_one_step_are_reported_not_taken(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_checkpoint(run, 10, tiny_model_dir)
    shutil.copytree(run / "checkpoint-10", run / "checkpoint-0010")
    make_checkpoint(run, 20, tiny_model_dir)
    seen = scan(open_source(str(run)), tmp_path / "cache")
    assert [(c.step, c.state) for c in seen] == [(10, "incomplete"), (10, "incomplete"), (20, "complete")]
    assert "step 10 is claimed by both checkpoint-0010 and checkpoint-10" in seen[0].reason


def test_openrlhf_checkpoints_wait_for_their_tokenizer_and_without_latest_for_a_later_step(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with_latest, without = tmp_path / "with-latest", tmp_path / "without-latest"
    (with_latest / "_actor").mkdir(parents=True)
    (with_latest / "_actor" / "latest").write_text("global_step30")  # written before the _hf directory
    half = with_latest / "global_step30_hf"
    half.mkdir()
    shutil.copy(tiny_model_dir / "model.safetensors", half)
    shutil.copy(tiny_model_dir / "config.json", half)
    [caught] = scan(open_source(str(with_latest)), tmp_path / "cache")
    assert caught.state == "incomplete" and "no tokenizer files yet" in caught.reason
    for step in (10, 20):
        shutil.copytree(tiny_model_dir, without / f"global_step{step}_hf")
    seen = by_step(scan(open_source(str(without)), tmp_path / "cache"))
    assert seen[10].state == "complete"
    assert seen[20].state == "incomplete" and "taken once a later step appears" in seen[20].reason


class TrainerAtWork(LocalSource):
    """A run directory the trainer touches while the watcher copies it: after the first file, `act` runs once."""

    def __init__(self, root: Path, act: Any) -> None:
        super().__init__(root)
        self.act: Any = act

    def fetch(self, checkpoint: str, name: str, dest: Path) -> str:
        digest = super().fetch(checkpoint, name, dest)
        act, self.act = self.act, None
        if act is not None:
            act()
        return digest


def test_a_checkpoint_rewritten_mid_copy_is_looked_at_again_and_one_rotated_away_is_recorded_so(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from shipyard.selection import decide, load_state
    from shipyard.settings import WatchSettings

    run = tmp_path / "run"
    ckpt = make_checkpoint(run, 10, tiny_model_dir)
    rewritten = TrainerAtWork(run, lambda: (ckpt / "config.json").write_text((ckpt / "config.json").read_text() + " "))
    [seen] = scan(rewritten, tmp_path / "cache")
    assert seen.state == "incomplete" and "config.json changed while being copied" in seen.reason
    [again] = scan(open_source(str(run)), tmp_path / "cache")  # the next poll: settled, taken
    assert again.state == "complete"
    ckpt = make_checkpoint(run, 20, tiny_model_dir)
    rotated = TrainerAtWork(run, lambda: shutil.rmtree(ckpt))
    gone = by_step(scan(rotated, tmp_path / "cache", skip=[again.uri]))[20]
    assert gone.state == "gone"
    state = load_state(tmp_path / "watch", rotated.uri)
    decide([gone], state, WatchSettings(), 0.0)
    assert (state.decided[gone.uri].state, state.decided[gone.uri].reason) == (
        "skipped",
        "rotated away by the trainer before it could be copied",
    )
