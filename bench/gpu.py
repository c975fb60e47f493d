"""Bench (GPU): Shipyard's preference stage against TRL's `DPOTrainer` called directly, at ~0.5B and ~1.5B.

The same comparison as `bench/posttrain.py`, on a CUDA device and at real
sizes: Llama-shaped models of ~0.47B and ~1.42B parameters (random weights,
bf16 on disk, the demo's character tokenizer), the default recipe's
preference stage (40 steps, batch 16, the demo's preference pairs). Each run
is a fresh process, Shipyard and the peer alternating; the time is from
building the trainer to the end of training, memory is the peak CUDA
allocation. The peer passes the same hyper-parameters, bf16 and gradient
checkpointing (what Shipyard picks on a GPU) and precomputed reference
log-probs. Run on a GPU machine: `python bench/gpu.py [OUT_DIR]` (about
five minutes on an H100); each size's result is also written to OUT_DIR.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

SIZES = {
    "0.5B": {"hidden_size": 1024, "num_layers": 28, "num_heads": 16, "intermediate_size": 4096},
    "1.5B": {"hidden_size": 1536, "num_layers": 28, "num_heads": 12, "intermediate_size": 8960},
}
ROUNDS = 2
KINDS = ("shipyard", "trl", "trl-log-every-step")  # the last: TRL with Shipyard's logging_steps=1 and data_seed


def one(kind: str, model_dir: Path) -> dict[str, float]:
    from posttrain import train  # bench/ is on sys.path: the script's own directory

    torch.cuda.synchronize()
    seconds = train(kind, model_dir, bf16=True, gradient_checkpointing=True)
    torch.cuda.synchronize()
    return {"seconds": seconds, "peak_cuda_gb": torch.cuda.max_memory_allocated() / 2**30}


def build(out: Path, shape: dict[str, int]) -> Path:
    from shipyard.demo.tiny import TinyModelSpec, build_model, build_tokenizer

    tokenizer = build_tokenizer()
    model = build_model(tokenizer, TinyModelSpec(**shape)).to(torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] in KINDS:
        print(json.dumps(one(sys.argv[1], Path(sys.argv[2]))))
        return
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    results: dict[str, object] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    for size, shape in SIZES.items():
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = build(Path(tmp) / "model", shape)
            runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
            for _ in range(ROUNDS):
                for kind in runs:
                    done = subprocess.run(
                        [sys.executable, __file__, kind, str(model_dir)], capture_output=True, text=True
                    )
                    if done.returncode:
                        sys.exit(f"{kind} at {size} failed:\n{done.stderr[-4000:]}")
                    runs[kind].append(json.loads(done.stdout.strip().splitlines()[-1]))
        row = {
            kind: {key: statistics.median(r[key] for r in rs) for key in ("seconds", "peak_cuda_gb")}
            for kind, rs in runs.items()
        }
        row["ratio"] = {key: row["shipyard"][key] / row["trl"][key] for key in ("seconds", "peak_cuda_gb")}
        row["ratio to the peer logging every step"] = {
            "seconds": row["shipyard"]["seconds"] / row["trl-log-every-step"]["seconds"]
        }
        results[size] = row
        print(json.dumps({size: row}), flush=True)
        if out_dir:
            (out_dir / "gpu.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
