"""Bench: delta releases. For each release, the delta's bytes against the full release, and `pull --from` against a
full pull, both through Shipyard's own `pull` from a local store.

1. Simulated drift (`--part sim`): a ~0.5B-parameter bf16 model in two safetensors shards (Qwen2.5-0.5B's shapes:
   24 layers, hidden 896, MLP 4864, vocabulary 151936). RL updates touch a fixed subset of the weights (20%: a
   whole run changes 5-30% of parameters) and, per step, 2.5% of that subset moves by one bf16 ulp or so (0.5% of
   all weights a step: over 99% of bf16 weights unchanged per step). Releases 10, 100 and 500 steps apart.
2. The demo RL run (`--part demo`): its consecutive checkpoints, each post-trained with the demo's recipe, then
   published in step order (ungated: this bench measures storage, not the gate).

Run: `.venv/bin/python bench/deltas.py --part sim [--store s3]` (about 10 minutes, 8 GB of disk; `--store s3`
puts the releases on moto's S3 server on 127.0.0.1, so a pull goes over HTTP) and `--part demo`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")

from shipyard.registry.ledger import Ledger
from shipyard.registry.publish import manifest, publish, pull
from shipyard.registry.stores import LocalStore, S3Store, Store

HIDDEN, MLP, VOCAB, LAYERS = 896, 4864, 151936, 24
ACTIVE, PER_STEP = 0.20, 0.025  # share of weights RL moves at all; share of those that move in one step


def shapes() -> dict[str, tuple[int, ...]]:
    found: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        found |= {
            f"{p}.self_attn.q_proj.weight": (HIDDEN, HIDDEN),
            f"{p}.self_attn.k_proj.weight": (128, HIDDEN),
            f"{p}.self_attn.v_proj.weight": (128, HIDDEN),
            f"{p}.self_attn.o_proj.weight": (HIDDEN, HIDDEN),
            f"{p}.mlp.gate_proj.weight": (MLP, HIDDEN),
            f"{p}.mlp.up_proj.weight": (MLP, HIDDEN),
            f"{p}.mlp.down_proj.weight": (HIDDEN, MLP),
            f"{p}.input_layernorm.weight": (HIDDEN,),
        }
    return found


def write_model(out: Path, bits: dict[str, np.ndarray]) -> None:
    """Two safetensors shards of bf16 tensors given as their uint16 bit patterns, plus a config."""
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    names = list(bits)
    for shard, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
        tensors = {n: torch.from_numpy(bits[n].view(np.int16)).view(torch.bfloat16) for n in part}
        save_file(tensors, out / f"model-0000{shard + 1}-of-00002.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text('{"model_type": "qwen2", "torch_dtype": "bfloat16"}\n')


def drift(bits: dict[str, np.ndarray], active: dict[str, np.ndarray], steps: int, rng: np.random.Generator) -> None:
    """`steps` RL steps, in place: each active weight moved at least once with 1-(1-PER_STEP)^steps, by 1-3 ulps."""
    moved_once = 1 - (1 - PER_STEP) ** steps
    for name, b in bits.items():
        flat, where = b.reshape(-1), active[name]
        moved = where[rng.random(where.size) < moved_once]
        flat[moved] = flat[moved] + rng.choice(np.array([-3, -2, -1, 1, 2, 3], np.int16), moved.size).view(np.uint16)


def open_store(kind: str, tmp: Path) -> Store:
    """A local store, or an S3 store on moto's server on 127.0.0.1 (boto3 over real HTTP, as to a bucket)."""
    if kind == "local":
        return LocalStore(tmp / "store")
    import boto3
    from moto.server import ThreadedMotoServer

    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    ThreadedMotoServer(ip_address="127.0.0.1", port=5123, verbose=False).start()
    boto3.client("s3", endpoint_url="http://127.0.0.1:5123").create_bucket(Bucket="bench")
    return S3Store("s3://bench/releases", "http://127.0.0.1:5123")


def pull_seconds(store: Store, ref: str, out: Path, base: Path | None) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    pulled = pull(store, "main", ref, out, base)
    return time.perf_counter() - start, pulled.bytes_fetched


def simulated(tmp: Path, kind: str) -> None:
    rng = np.random.default_rng(0)
    bits = {
        n: (rng.normal(0, 0.02, s).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        for n, s in shapes().items()
    }
    params = sum(b.size for b in bits.values())
    active = {n: np.flatnonzero(rng.random(b.size) < ACTIVE) for n, b in bits.items()}
    store = open_store(kind, tmp)
    write_model(tmp / "v1", bits)
    publish(tmp / "v1", "main", store, ungated="bench")
    pull(store, "main", "v1", tmp / "held-v1")
    print(f"{params / 1e9:.2f}B parameters, bf16, 2 shards, {kind} store")
    print(
        "| steps since the last release | weights changed | full release | delta | delta / full |"
        " publish s | full pull s | pull --from s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    version = 1
    for steps in (10, 100, 500):
        before = {n: b.copy() for n, b in bits.items()}
        drift(bits, active, steps, rng)
        changed = sum(int(np.count_nonzero(bits[n] != before[n])) for n in bits) / params
        del before
        version += 1
        model = tmp / f"v{version}"
        write_model(model, bits)
        start = time.perf_counter()
        publish(model, "main", store, ungated="bench")
        publish_s = time.perf_counter() - start
        body = manifest(store, Ledger(store).refresh().releases[("main", version)])
        full = sum(m["size"] for m in body["files"].values())
        delta = sum(p["size"] for p in (body.get("deltas") or {}).values())
        full_s, _ = pull_seconds(store, f"v{version}", tmp / "full", None)
        from_s, fetched = pull_seconds(store, f"v{version}", tmp / "from", tmp / f"held-v{version - 1}")
        shutil.move(tmp / "from", tmp / f"held-v{version}")
        shutil.rmtree(tmp / f"held-v{version - 1}")
        shutil.rmtree(model)
        print(
            f"| {steps} | {changed:.1%} | {full / 1e9:.2f} GB | {delta / 1e6:.0f} MB | {delta / full:.1%} |"
            f" {publish_s:.1f} | {full_s:.1f} | {from_s:.1f} (fetched {fetched / 1e6:.0f} MB) |",
            flush=True,
        )


def demo(tmp: Path, steps: int) -> None:
    from shipyard.demo.rl_run import run_demo
    from shipyard.intake.scan import scan
    from shipyard.intake.sources import open_source
    from shipyard.orchestration.pipeline import make_candidate
    from shipyard.settings import DemoSettings, Settings

    run_demo(DemoSettings(out=tmp / "run", steps=steps, save_every=10), progress=False)
    settings = Settings(profile="demo", home=tmp / "home")
    store = LocalStore(tmp / "store")
    print("| release | from step | full release | delta | delta / full | full pull s | pull --from s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    held: Path | None = None
    for checkpoint in sorted(scan(open_source(str(tmp / "run")), tmp / "snapshots"), key=lambda c: c.step):
        candidate = make_candidate(checkpoint, settings)
        version = publish(candidate, "main", store, ungated="bench").release.version
        body = manifest(store, Ledger(store).refresh().releases[("main", version)])
        full = sum(m["size"] for m in body["files"].values())
        delta = sum(p["size"] for p in (body.get("deltas") or {}).values())
        full_s, _ = pull_seconds(store, f"v{version}", tmp / "full", None)
        shown = "—"
        if held is not None:
            from_s, fetched = pull_seconds(store, f"v{version}", tmp / "from", held)
            shown = f"{from_s:.2f} (fetched {fetched / 1e3:.0f} kB)"
        held = tmp / f"held-{version}"
        shutil.rmtree(held, ignore_errors=True)
        shutil.copytree(tmp / "full", held)
        print(
            f"| v{version} | {checkpoint.step} | {full / 1e6:.1f} MB | {delta / 1e6:.2f} MB |"
            f" {delta / full:.1%} | {full_s:.2f} | {shown} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["sim", "demo"], default="sim")
    parser.add_argument("--steps", type=int, default=60, help="Demo RL steps (--part demo).")
    parser.add_argument("--store", choices=["local", "s3"], default="local", help="Where releases live (--part sim).")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="shipyard-bench-deltas-"))
    try:
        simulated(tmp, args.store) if args.part == "sim" else demo(tmp, args.steps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
