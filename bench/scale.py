"""Bench: intake of sharded bf16 checkpoints at ~0.1B, ~0.5B and ~1.5B parameters, against the floor.

Writes Llama checkpoints the way `save_pretrained` shards them (safetensors
shards of at most 1 GB, an index, config, tokenizer files; finite random bf16
weights), then, each in a fresh child process so peak RSS is its own:

- intake: `shipyard.intake.scan.scan` of the run, after a scan of a tiny
  checkpoint that pays the imports, i.e. what a running watcher does to a
  new checkpoint (copy and hash into the snapshot cache, validate: headers,
  shapes against the config, NaN/Inf scan, chat template);
- the floor: `cp -r` of the checkpoint, then `openssl dgst -sha256` of every file.

The scan's own time, the child's wall time (with Python, torch and
transformers imports and the warm-up) and its peak RSS
(`/usr/bin/time`), medians of 3, page cache warm for both.
Run: `.venv/bin/python bench/scale.py [0.1 0.5 1.5]` (about 4 minutes).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

SIZES = {  # ~parameters: (hidden, layers, intermediate, heads)
    "0.1": (768, 8, 2048, 12),
    "0.5": (1536, 16, 4096, 12),
    "1.5": (2048, 24, 5632, 16),
}
SHARD_BYTES = 1 << 30
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
INTAKE = """
import sys, time
from pathlib import Path
from shipyard.intake.sources import open_source
from shipyard.intake.scan import scan
scan(open_source(sys.argv[3]), Path(sys.argv[2]))  # a tiny checkpoint first: imports are paid once per watcher
start = time.perf_counter()
[c] = scan(open_source(sys.argv[1]), Path(sys.argv[2]))
assert c.state == "complete", c.reason
print(time.perf_counter() - start)
"""


RELEASE = """
import json, sys, time
from pathlib import Path
from shipyard.registry.publish import model_digest, publish, pull
from shipyard.registry.stores import open_store
model, store_uri, endpoint, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3] or None, Path(sys.argv[4])
model_digest(model)  # as after intake: every digest is in the digest cache
store = open_store(store_uri, endpoint)
start = time.perf_counter()
version = publish(model, "main", store, ungated="bench").release.version
published = time.perf_counter() - start
start = time.perf_counter()
pull(store, "main", str(version), out)
print(json.dumps({"publish_s": published, "pull_s": time.perf_counter() - start}))
"""
PEER = """
import hashlib, json, sys, time
from pathlib import Path
import boto3
model, bucket, endpoint, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
client = boto3.client("s3", endpoint_url=endpoint)  # boto3's defaults: TransferConfig(), standard client
files = sorted(p for p in model.iterdir() if p.is_file())
start = time.perf_counter()
for p in files:
    client.upload_file(str(p), bucket, f"peer/{p.name}")
uploaded = time.perf_counter() - start
out.mkdir()
start = time.perf_counter()
for p in files:
    client.download_file(bucket, f"peer/{p.name}", str(out / p.name))
    with (out / p.name).open("rb") as f:
        hashlib.file_digest(f, "sha256")
print(json.dumps({"upload_s": uploaded, "download_sha256_s": time.perf_counter() - start}))
"""


def llama(size: str) -> tuple[Any, dict[str, tuple[int, ...]]]:
    """A bf16 Llama config of about `size` billion parameters, and its tensors' shapes."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    hidden, layers, intermediate, heads = SIZES[size]
    config = LlamaConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        intermediate_size=intermediate,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        vocab_size=32000,
        dtype="bfloat16",
    )
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in AutoModelForCausalLM.from_config(config).state_dict().items()}
    return config, shapes


def make_checkpoint(out: Path, size: str, tokenizer_from: Path) -> int:
    """A sharded bf16 Llama checkpoint under out/checkpoint-1; its parameter count."""
    config, shapes = llama(size)
    ckpt = out / "checkpoint-1"
    ckpt.mkdir(parents=True)
    config.save_pretrained(ckpt)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tokenizer_from / name, ckpt)
    rng = np.random.default_rng(0)
    shards: list[dict[str, np.ndarray]] = [{}]
    for name, shape in shapes.items():
        values = rng.integers(0, 1 << 16, size=shape, dtype=np.uint16) & 0xBFFF  # exponent < all ones: finite
        if shards[-1] and sum(v.nbytes for v in shards[-1].values()) + values.nbytes > SHARD_BYTES:
            shards.append({})
        shards[-1][name] = values
    weight_map: dict[str, str] = {}
    for i, shard in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        write_bf16(ckpt / file, shard)
        weight_map |= dict.fromkeys(shard, file)
    index = {"metadata": {"total_size": sum(np.prod(s) * 2 for s in shapes.values())}, "weight_map": weight_map}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index, default=int))
    (ckpt / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 1, "reward": 0.5}]}))
    return int(sum(np.prod(s) for s in shapes.values()))


def write_bf16(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """A safetensors file of bf16 tensors given as their uint16 bits (numpy has no bfloat16)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, values in tensors.items():
        header[name] = {"dtype": "BF16", "shape": list(values.shape), "data_offsets": [offset, offset + values.nbytes]}
        offset += values.nbytes
    body = json.dumps(header, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)
    with path.open("wb") as f:
        f.write(len(body).to_bytes(8, "little") + body)
        for values in tensors.values():
            f.write(values.tobytes())


def timed(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and standard output of a child process."""
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *command], capture_output=True, text=True, check=True)
    return time.perf_counter() - start, int(done.stderr.strip().splitlines()[-1]) / 1024, done.stdout


def release(model: Path, tmp: Path, endpoint: str) -> dict[str, float]:
    """Publish and pull `model` on a local store (same file system) and on S3, each beside its peer."""
    local, s3 = tmp / "store", f"s3://bench/{tmp.name}"
    _, rss, out = timed([sys.executable, "-c", RELEASE, str(model), str(local), "", str(tmp / "pulled")])
    ours = json.loads(out)
    cp = timed(["cp", "-r", str(model), str(tmp / "cp")])[0]
    copy_hash = cp + timed(["openssl", "dgst", "-sha256", *sorted(str(p) for p in (tmp / "cp").iterdir())])[0]
    _, s3_rss, s3_out = timed([sys.executable, "-c", RELEASE, str(model), s3, endpoint, str(tmp / "s3-pulled")])
    theirs = json.loads(timed([sys.executable, "-c", PEER, str(model), "bench", endpoint, str(tmp / "peer")])[2])
    s3_ours = json.loads(s3_out)
    for path in (local, tmp / "pulled", tmp / "cp", tmp / "s3-pulled", tmp / "peer"):
        subprocess.run(["chmod", "-R", "u+w", str(path)], check=False)
        shutil.rmtree(path, ignore_errors=True)
    return {
        "local_publish_s": round(ours["publish_s"], 2),
        "cp_s": round(cp, 2),
        "local_publish_over_cp": round(ours["publish_s"] / cp, 3),
        "local_pull_s": round(ours["pull_s"], 2),
        "cp_plus_sha256_s": round(copy_hash, 2),
        "local_pull_over_floor": round(ours["pull_s"] / copy_hash, 2),
        "local_peak_rss_MB": round(rss),
        "s3_publish_s": round(s3_ours["publish_s"], 2),
        "boto3_upload_s": round(theirs["upload_s"], 2),
        "s3_publish_throughput_vs_boto3": round(theirs["upload_s"] / s3_ours["publish_s"], 2),
        "s3_pull_s": round(s3_ours["pull_s"], 2),
        "boto3_download_sha256_s": round(theirs["download_sha256_s"], 2),
        "s3_pull_over_floor": round(s3_ours["pull_s"] / theirs["download_sha256_s"], 2),
        "s3_peak_rss_MB": round(s3_rss),
    }


def main() -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    from shipyard.demo.tiny import build_tiny_model

    for key, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=5125, verbose=False)
    server.start()
    endpoint = "http://127.0.0.1:5125"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")

    sizes = sys.argv[1:] or list(SIZES)
    results = {}
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp_dir:
        tmp = Path(tmp_dir)
        tokenizer = build_tiny_model(tmp / "tiny")
        warm = tmp / "warm-up"
        shutil.copytree(tokenizer, warm / "checkpoint-1")
        (warm / "checkpoint-1" / "trainer_state.json").write_text(json.dumps({"log_history": []}))
        for size in sizes:
            run = tmp / f"run-{size}"
            params = make_checkpoint(run, size, tokenizer)
            ckpt = run / "checkpoint-1"
            total = sum(p.stat().st_size for p in ckpt.iterdir())
            walls: list[float] = []
            scans: list[float] = []
            rsss: list[float] = []
            floor: list[float] = []
            for i in range(REPEATS):
                cache, copy = tmp / f"cache-{size}-{i}", tmp / f"copy-{size}-{i}"
                wall, rss, out = timed([sys.executable, "-c", INTAKE, str(run), str(cache), str(warm)])
                walls, scans, rsss = [*walls, wall], [*scans, float(out)], [*rsss, rss]
                cp = timed(["cp", "-r", str(ckpt), str(copy)])
                sha = timed(["openssl", "dgst", "-sha256", *sorted(str(p) for p in copy.iterdir())])
                floor.append(cp[0] + sha[0])
                shutil.rmtree(cache)
                shutil.rmtree(copy)
            scan_s, floor_s = statistics.median(scans), statistics.median(floor)
            results[size] = {
                "parameters": params,
                "bytes": total,
                "scan_s": round(scan_s, 2),
                "process_s": round(statistics.median(walls), 2),
                "peak_rss_MB": round(statistics.median(rsss)),
                "cp_plus_openssl_sha256_s": round(floor_s, 2),
                "scan_over_floor": round(scan_s / floor_s, 2),
            }
            results[size] |= release(ckpt, Path(tempfile.mkdtemp(dir=tmp)), endpoint)
            print(json.dumps({size: results[size]}), flush=True)
            shutil.rmtree(run)
    server.stop()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
