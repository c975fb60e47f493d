"""Sharded training checkpoints made by real FSDP2 code become Hugging Face models equal to the unsharded one."""

import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from shipyard.errors import InvalidCheckpoint
from shipyard.intake.convert import convert
from shipyard.intake.scan import scan
from shipyard.intake.sources import open_source
from shipyard.intake.validation import validate_checkpoint
from shipyard.settings import ConvertSettings

from .sharded import train_sharded


@pytest.fixture(scope="module")
def sharded(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_sharded(tiny_model_dir, tmp_path_factory.mktemp("sharded"))


def assert_equals_unsharded(model_dir: Path, sharded: Path) -> None:
    full = load_file(sharded / "full.safetensors")
    got = load_file(model_dir / "model.safetensors")
    assert set(got) == set(full) - {"lm_head.weight"}  # tied to the embeddings: stored once
    assert all(torch.equal(full[name], got[name]) for name in got)
    assert validate_checkpoint(model_dir) == []
    ids = torch.arange(1, 17).unsqueeze(0)
    reference = AutoModelForCausalLM.from_pretrained(model_dir)
    reference.load_state_dict(full, strict=False)
    with torch.no_grad():
        assert torch.equal(AutoModelForCausalLM.from_pretrained(model_dir)(ids).logits, reference(ids).logits)


@pytest.mark.parametrize(("fmt", "weights"), [("dcp", "dcp"), ("fsdp-ranks", "verl")])
def test_sharded_checkpoints_convert_bit_for_bit(
    sharded: Path, tiny_model_dir: Path, tmp_path: Path, fmt: str, weights: str
) -> None:
    done = convert(fmt, sharded / weights, [tiny_model_dir], tmp_path / "model")
    assert_equals_unsharded(done.path, sharded)
    assert done.converter.startswith(f"shipyard ({fmt})")
    again = convert(fmt, sharded / "missing", [tiny_model_dir], tmp_path / "model")  # cached: nothing read
    assert again.path == done.path


def test_shards_are_bounded_and_indexed(sharded: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    done = convert("dcp", sharded / "dcp", [tiny_model_dir], tmp_path / "model", max_shard_bytes=200_000)
    shards = sorted(done.path.glob("model-*.safetensors"))
    assert len(shards) > 2 and (done.path / "model.safetensors.index.json").is_file()
    assert validate_checkpoint(done.path) == []
    assert torch.equal(
        AutoModelForCausalLM.from_pretrained(done.path).model.norm.weight,
        load_file(sharded / "full.safetensors")["model.norm.weight"],
    )


def test_renamed_tensors_map_through_the_rename_table(sharded: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    full = load_file(sharded / "full.safetensors")
    renamed = {f"_orig_mod.module.{k.replace('.layers.', '.blocks.')}": v for k, v in full.items()}
    dcp.save(renamed, checkpoint_id=tmp_path / "dcp", no_dist=True)
    with pytest.raises(InvalidCheckpoint, match=r"tensors config.json implies are not in the checkpoint"):
        convert("dcp", tmp_path / "dcp", [tiny_model_dir], tmp_path / "refused")
    done = convert("dcp", tmp_path / "dcp", [tiny_model_dir], tmp_path / "model", renames=[(r"\.blocks\.", ".layers.")])
    assert_equals_unsharded(done.path, sharded)


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_dcp_metadata_cannot_run_code_or_point_outside(sharded: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    hostile = tmp_path / "hostile"
    shutil.copytree(sharded / "dcp", hostile)
    (hostile / ".metadata").write_bytes(pickle.dumps(Payload(tmp_path / "ran")))
    with pytest.raises(InvalidCheckpoint, match=r"\.metadata: not DCP metadata \(posix.system is not part"):
        convert("dcp", hostile, [tiny_model_dir], tmp_path / "out")
    assert not (tmp_path / "ran").exists()

    from shipyard.intake.convert import _read_metadata

    metadata = _read_metadata(sharded / "dcp")
    for info in metadata.storage_data.values():
        info.relative_path = "../../etc/passwd"
    (hostile / ".metadata").write_bytes(pickle.dumps(metadata))
    with pytest.raises(InvalidCheckpoint, match=r"names data file '../../etc/passwd' outside the checkpoint"):
        convert("dcp", hostile, [tiny_model_dir], tmp_path / "out")


def test_a_config_the_weights_do_not_match_is_refused_before_reading(
    sharded: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    config = (other / "config.json").read_text().replace('"intermediate_size": 256', '"intermediate_size": 4096')
    (other / "config.json").write_text(config)
    with pytest.raises(InvalidCheckpoint, match=r"has shape \[256, 128\], config.json implies \[4096, 128\]"):
        convert("fsdp-ranks", sharded / "verl", [other], tmp_path / "out")


def test_a_converter_command_runs_and_its_failure_is_the_reason(tiny_model_dir: Path, tmp_path: Path) -> None:
    copy = f"{sys.executable} -c 'import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2], dirs_exist_ok=True)'"
    done = convert("command", tiny_model_dir, [], tmp_path / "model", command=f"{copy} {{src}} {{out}}")
    assert validate_checkpoint(done.path) == [] and done.converter.startswith("command: ")
    failing = f"{sys.executable} -c 'import sys; print(\"no such checkpoint\"); sys.exit(3)'"
    with pytest.raises(InvalidCheckpoint, match=r"converter exited 3: no such checkpoint \(log: .*fail.log\)"):
        convert("command", tiny_model_dir, [], tmp_path / "out", command=failing, log=tmp_path / "fail.log")
    with pytest.raises(InvalidCheckpoint, match=r"no converter for this format; set convert.command"):
        convert("command", tiny_model_dir, [], tmp_path / "out")


def test_the_watcher_takes_nemo_rl_and_verl_checkpoints_as_models(
    sharded: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    nemo = run / "nemo" / "step_10" / "policy"
    shutil.copytree(sharded / "dcp", nemo / "weights")
    shutil.copytree(tiny_model_dir, nemo / "tokenizer", ignore=shutil.ignore_patterns("*.safetensors", "config.json"))
    shutil.copytree(sharded / "dcp", run / "nemo" / "tmp_step_20" / "policy" / "weights")  # not renamed yet
    actor = run / "verl" / "global_step_30" / "actor"
    shutil.copytree(sharded / "verl", actor)
    shutil.copytree(tiny_model_dir, actor / "huggingface", ignore=shutil.ignore_patterns("*.safetensors"))
    (actor / "optim_world_size_2_rank_0.pt").write_bytes(b"optimizer state: never copied")
    (run / "verl" / "latest_checkpointed_iteration.txt").write_text("30")
    seen = {c.step: c for c in scan(open_source(str(run)), tmp_path / "home", convert=ConvertSettings())}
    assert seen[10].state == "invalid" and "set convert.base_model" in seen[10].reason  # NeMo-RL saves no config
    assert seen[20].state == "incomplete" and "renames tmp_step" in seen[20].reason
    assert seen[30].state == "complete" and seen[30].converted_by.startswith("shipyard (fsdp-ranks)")
    assert_equals_unsharded(Path(seen[30].path), sharded)
    snapshot = tmp_path / "home" / "snapshots" / "checkpoints" / seen[30].digest
    assert not (snapshot / "optim_world_size_2_rank_0.pt").exists()

    settings = ConvertSettings(base_model=tiny_model_dir)
    [nemo_step] = scan(open_source(str(run)), tmp_path / "home", skip=[seen[20].uri, seen[30].uri], convert=settings)
    assert nemo_step.state == "complete", nemo_step.reason
    assert_equals_unsharded(Path(nemo_step.path), sharded)


def test_a_lora_only_checkpoint_is_merged_into_its_base_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)  # LoRA starts at zero; give it something to merge
    ckpt = tmp_path / "run" / "checkpoint-5"
    peft_model.save_pretrained(ckpt)
    (ckpt / "trainer_state.json").write_text('{"log_history": []}')
    merged = peft_model.merge_and_unload().state_dict()

    [taken] = scan(open_source(str(tmp_path / "run")), tmp_path / "home")  # the base its config names, local
    assert taken.state == "complete", taken.reason
    assert taken.converted_by.startswith("peft ")
    got = load_file(Path(taken.path) / "model.safetensors")
    assert all(torch.equal(merged[name], got[name]) for name in got)

    config = json.loads((ckpt / "adapter_config.json").read_text())
    (ckpt / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": "org/elsewhere"}))
    [refused] = scan(open_source(str(tmp_path / "run")), tmp_path / "home2")
    assert refused.state == "invalid" and "org/elsewhere, which is not a local model" in refused.reason
    settings = ConvertSettings(base_model=tiny_model_dir)
    [again] = scan(open_source(str(tmp_path / "run")), tmp_path / "home3", convert=settings)
    assert again.state == "complete", again.reason


def test_floats_are_written_in_the_dtype_the_config_names(sharded: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    bf16 = tmp_path / "bf16"
    shutil.copytree(tiny_model_dir, bf16, ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((bf16 / "config.json").read_text())
    (bf16 / "config.json").write_text(json.dumps(config | {"dtype": "bfloat16"}))
    done = convert("fsdp-ranks", sharded / "verl", [bf16], tmp_path / "model")  # as veRL's merger writes it
    full, got = load_file(sharded / "full.safetensors"), load_file(done.path / "model.safetensors")
    assert all(got[name].dtype == torch.bfloat16 and torch.equal(got[name], full[name].bfloat16()) for name in got)
    assert any("cast to torch.bfloat16" in note for note in done.notes)


@pytest.mark.s3
def test_a_nemo_rl_run_on_s3_is_converted_like_a_local_one(
    sharded: Path, tiny_model_dir: Path, tmp_path: Path, s3_endpoint: str
) -> None:
    import uuid

    import boto3

    from shipyard.settings import S3Settings

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = f"runs-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    for step in (10, 20):
        for path in sorted((sharded / "dcp").iterdir()):
            client.upload_file(str(path), bucket, f"nemo/step_{step}/policy/weights/{path.name}")
    client.put_object(Bucket=bucket, Key="nemo/step_10/policy/optimizer/.metadata", Body=b"never copied")
    source = open_source(f"s3://{bucket}/nemo", S3Settings(endpoint_url=s3_endpoint))
    seen = scan(source, tmp_path / "home", convert=ConvertSettings(base_model=tiny_model_dir))
    assert [(c.step, c.state, c.layout) for c in seen] == [(10, "complete", "nemo-rl"), (20, "complete", "nemo-rl")]
    assert_equals_unsharded(Path(seen[0].path), sharded)
    assert seen[0].uri == f"s3://{bucket}/nemo/step_10"


# veRL's own merger needs these at import time (verl imports ray and tensordict at its top); installed without
# their own dependencies into a directory of the test's, never into the project's environment.
VERL = ["verl==0.9.1", "ray==2.60.0", "tensordict==0.15.3", "omegaconf==2.4.0", "antlr4-python3-runtime==4.13.2"]
VERL += ["codetiming==1.4.0", "msgpack==1.2.4", "protobuf==7.36.2", "pyvers==0.2.3"]


@pytest.mark.slow
def test_verl_rank_shards_convert_byte_for_byte_as_verls_own_merger(
    sharded: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import subprocess

    site = tmp_path / "verl-site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), *VERL]
    subprocess.run(pip, check=True, capture_output=True, timeout=600)
    local = tmp_path / "actor"
    shutil.copytree(sharded / "verl", local)
    shutil.copytree(tiny_model_dir, local / "huggingface", ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((local / "huggingface" / "config.json").read_text())
    (local / "huggingface" / "config.json").write_text(json.dumps(config | {"dtype": "bfloat16"}))
    merger = [sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp"]
    merger += ["--local_dir", str(local), "--target_dir", str(tmp_path / "verl")]
    done = subprocess.run(
        merger, env=os.environ | {"PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ours = convert("fsdp-ranks", local, [local / "huggingface"], tmp_path / "ours")
    assert (ours.path / "model.safetensors").read_bytes() == (tmp_path / "verl" / "model.safetensors").read_bytes()


# DeepSpeed from its sdist, built without its ops, and what it imports, into the test's own directory.
DEEPSPEED = ["deepspeed==0.19.8", "hjson==3.1.0", "py-cpuinfo==9.0.0", "ninja==1.13.2", "einops", "msgpack==1.2.4"]


@pytest.mark.slow
def test_zero_checkpoints_merge_through_deepspeed_without_running_its_pickles(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    from .sharded import train_zero

    site = tmp_path / "ds-site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site)]
    subprocess.run(
        [*pip, *DEEPSPEED], check=True, capture_output=True, timeout=600, env=os.environ | {"DS_BUILD_OPS": "0"}
    )
    out = train_zero(tiny_model_dir, tmp_path / "zero", site)
    with pytest.raises(InvalidCheckpoint, match=r"need deepspeed installed"):
        convert("zero", out / "global_step3", [tiny_model_dir], tmp_path / "without")
    monkeypatch.setenv("PYTHONPATH", str(site))  # where deepspeed is installed: the converter's child finds it
    done = convert("zero", out / "global_step3", [tiny_model_dir], tmp_path / "model")
    assert done.converter.startswith("deepspeed 0.19.8 zero_to_fp32")
    full, got = load_file(out / "full.safetensors"), load_file(done.path / "model.safetensors")
    assert set(got) == set(full) - {"lm_head.weight"} and all(torch.equal(full[k], got[k]) for k in got)
    assert validate_checkpoint(done.path) == []

    hostile = tmp_path / "hostile" / "global_step3"
    shutil.copytree(out / "global_step3", hostile)
    torch.save({"module": Payload(tmp_path / "ran")}, hostile / "mp_rank_00_model_states.pt")
    with pytest.raises(InvalidCheckpoint, match=r"converter exited 1"):
        convert("zero", hostile, [tiny_model_dir], tmp_path / "refused")
    assert not (tmp_path / "ran").exists()


def test_a_conversion_killed_midway_resumes_from_the_shards_it_finished(
    sharded: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import subprocess

    import shipyard.intake.convert

    args = f"'dcp', Path({str(sharded / 'dcp')!r}), [Path({str(tiny_model_dir)!r})], Path({str(tmp_path / 'model')!r})"
    killed = f"""
import os
from pathlib import Path
import shipyard.intake.convert as c
calls = []
load = c.DcpTensors.load
def dying(self, names):
    calls.append(names)
    if len(calls) == 3:
        os._exit(9)  # killed while reading the third shard's tensors
    return load(self, names)
c.DcpTensors.load = dying
c.convert({args}, max_shard_bytes=200_000)
"""
    assert subprocess.run([sys.executable, "-c", killed], capture_output=True, timeout=300).returncode == 9
    partial = tmp_path / ".model.partial" / "model"
    assert len(list(partial.glob("model-*-of-*.safetensors"))) == 2 and not (tmp_path / "model").exists()

    reads: list[list[str]] = []
    load = shipyard.intake.convert.DcpTensors.load

    def counting(self: shipyard.intake.convert.DcpTensors, names: list[str]) -> dict[str, torch.Tensor]:
        reads.append(names)
        return load(self, names)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shipyard.intake.convert.DcpTensors, "load", counting)
        done = convert("dcp", sharded / "dcp", [tiny_model_dir], tmp_path / "model", max_shard_bytes=200_000)
    shards = sorted(done.path.glob("model-*.safetensors"))
    assert len(reads) == len(shards) - 2  # the two finished shards were not read again
    assert not (tmp_path / ".model.partial").exists()
    model = AutoModelForCausalLM.from_pretrained(done.path)
    full = load_file(sharded / "full.safetensors")
    assert all(torch.equal(t, full[name]) for name, t in model.state_dict().items())


def test_an_hf_trainer_fsdp_sharded_checkpoint_is_taken_and_its_rank_state_never_copied(
    sharded: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """`checkpoint-N/` as transformers' Trainer writes it under accelerate's FSDP2 with SHARDED_STATE_DICT, by two
    gloo processes through accelerate's own calls (`tests/sharded.py`): the model a DCP of `{"model": …}`, the
    optimizer as DCP beside it, one RNG state per rank, the scheduler, trainer_state.json; no config.json and
    no weights file. Converted, it equals the full state dict bit for bit."""
    run = tmp_path / "run"
    shutil.copytree(sharded / "hf-fsdp", run)
    [refused] = scan(open_source(str(run)), tmp_path / "home", convert=ConvertSettings())
    assert refused.state == "invalid", refused
    assert "no config.json in the checkpoint, in the run" in refused.reason and "convert.base_model" in refused.reason
    assert "pickle" not in refused.reason

    full = load_file(sharded / "full.safetensors")
    [taken] = scan(open_source(str(run)), tmp_path / "home2", convert=ConvertSettings(base_model=tiny_model_dir))
    assert taken.state == "complete", taken.reason
    assert taken.converted_by.startswith("shipyard (dcp)")
    converted = AutoModelForCausalLM.from_pretrained(taken.path).state_dict()
    assert all(torch.equal(converted[name], tensor) for name, tensor in full.items())
    snapshot = tmp_path / "home2" / "snapshots" / "checkpoints" / taken.digest
    copied = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}
    assert copied and all(n.startswith("pytorch_model_fsdp_0/") or n == "trainer_state.json" for n in copied), copied

    # The Trainer saves the model's config (and the tokenizer) into the run's root: taken from there, no setting.
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tiny_model_dir / name, run / name)
    [from_run] = scan(open_source(str(run)), tmp_path / "home3", convert=ConvertSettings())
    assert from_run.state == "complete", from_run.reason
    converted = AutoModelForCausalLM.from_pretrained(from_run.path).state_dict()
    assert all(torch.equal(converted[name], tensor) for name, tensor in full.items())
    assert (Path(from_run.path) / "tokenizer.json").read_bytes() == (tiny_model_dir / "tokenizer.json").read_bytes()
    assert not any((tmp_path / "home3" / "run-config").iterdir())  # the copies were scratch
    snapshot = tmp_path / "home2" / "snapshots" / "checkpoints" / taken.digest
    copied = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}
    assert copied and all(n.startswith("pytorch_model_fsdp_0/") or n == "trainer_state.json" for n in copied), copied
