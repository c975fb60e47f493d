"""Sharded training checkpoints made by real distributed code: two gloo processes, FSDP2, a few optimizer steps.

`train_sharded(model_dir, out)` wraps the tiny Llama in `model_dir` with
`fully_shard` in two processes, takes three AdamW steps, then saves what the
frameworks save: a torch DCP checkpoint of the model (`out/dcp/`, as NeMo-RL,
prime-rl and torchtitan do), each rank's sharded state dict with `torch.save`
(`out/verl/model_world_size_2_rank_<r>.pt` and `fsdp_config.json`, on a mesh
named `fsdp`, as veRL's checkpoint manager does), a checkpoint as transformers' Trainer writes it under
accelerate's FSDP2 with SHARDED_STATE_DICT (`out/hf-fsdp/checkpoint-3/`: accelerate's `save_fsdp_model`
call, `pytorch_model_fsdp_0/` a DCP of `{"model": …}`, the optimizer as DCP in `optimizer_0/`, an RNG state
per rank, `scheduler.pt`, `trainer_state.json`; no config.json, no weights file), and the full unsharded
state dict (`out/full.safetensors`), the reference every conversion must equal bit for bit. (accelerate turns
FSDP on only for accelerator devices, never for MULTI_CPU, so the Trainer itself cannot run FSDP on this CPU
machine; the files are written by the calls it makes.)
"""

import json
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, model_dir: str, out: str, port: int) -> None:
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)
        mesh = init_device_mesh("cpu", (WORLD,), mesh_dim_names=("fsdp",))  # as veRL names its mesh
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(rank))
        for _ in range(3):
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        root = Path(out)
        sharded = model.state_dict()  # DTensors, one shard per rank
        dcp.save(sharded, checkpoint_id=root / "dcp")
        (root / "verl").mkdir(parents=True, exist_ok=True)
        torch.save(sharded, root / "verl" / f"model_world_size_{WORLD}_rank_{rank}.pt")
        if rank == 0:
            (root / "verl" / "fsdp_config.json").write_text(json.dumps({"FSDP_version": 2, "world_size": WORLD}))
        _save_as_hf_trainer(model, optimizer, root / "hf-fsdp" / "checkpoint-3", rank)
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            save_file({k: v.contiguous() for k, v in full.items()}, root / "full.safetensors")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _save_as_hf_trainer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ckpt: Path, rank: int) -> None:
    """What `Trainer._save_checkpoint` writes under accelerate's FSDP2 with SHARDED_STATE_DICT, by the same calls
    (accelerate's `save_fsdp_model` and `save_fsdp_optimizer`, transformers' per-rank RNG state)."""
    import torch.distributed.checkpoint as dist_cp
    from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=False, cpu_offload=False, broadcast_from_rank0=False)
    state = get_model_state_dict(model, options=options)
    writer = dist_cp.FileSystemWriter(str(ckpt / "pytorch_model_fsdp_0"))
    dist_cp.save(state_dict={"model": state}, storage_writer=writer, planner=DefaultSavePlanner())
    optim = get_optimizer_state_dict(model, optimizer, options=options)
    dist_cp.save(state_dict={"optimizer": optim}, storage_writer=dist_cp.FileSystemWriter(str(ckpt / "optimizer_0")))
    torch.save({"python": [rank], "cpu": torch.get_rng_state()}, ckpt / f"rng_state_{rank}.pth")
    dist.barrier()
    if rank == 0:
        torch.save({"last_epoch": 3}, ckpt / "scheduler.pt")
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 3, "log_history": [{"step": 3}]}))


def train_sharded(model_dir: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(_worker, args=(str(model_dir), str(out), _free_port()), nprocs=WORLD, join=True)
    return out


def _zero_worker(rank: int, model_dir: str, out: str, port: int) -> None:
    import deepspeed  # from the test's own directory (PYTHONPATH), never the project's environment
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank))
    os.environ.update(WORLD_SIZE=str(WORLD), DS_ACCELERATOR="cpu")
    deepspeed.init_distributed(dist_backend="gloo")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = {
        "train_micro_batch_size_per_gpu": 1,
        "zero_optimization": {"stage": 2},
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "torch_adam": True}},
    }
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
    ids = torch.randint(0, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(rank))
    for _ in range(3):
        engine.backward(engine(input_ids=ids, labels=ids).loss)
        engine.step()
    engine.save_checkpoint(out, tag="global_step3")  # DeepSpeed writes `latest` after the shards
    if rank == 0:
        full = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}  # tied weights: copies
        save_file(full, Path(out) / "full.safetensors")


def zero_main(model_dir: str, out: str) -> None:
    mp.spawn(_zero_worker, args=(model_dir, out, _free_port()), nprocs=WORLD, join=True)


def train_zero(model_dir: Path, out: Path, site: Path) -> Path:
    """A DeepSpeed ZeRO-2 checkpoint (`out/global_step3/`, `out/latest`) made by two gloo processes, with deepspeed
    imported from `site`; `out/full.safetensors` is the engine's model after the last step."""
    import subprocess
    import sys

    code = f"from tests.sharded import zero_main; zero_main({str(model_dir)!r}, {str(out)!r})"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(Path(__file__).parent.parent)])}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=600)
    return out
