"""Bench: Shipyard's preference stage against TRL's `DPOTrainer` called directly, same model, data and steps.

Each measurement runs in a fresh child process, alternating Shipyard and the
peer, so that peak memory (max RSS) is per run; the time is from building
the trainer to the end of training. The peer is what a user would write with
TRL alone for the same stage: `DPOConfig` with the same hyper-parameters and
precomputed reference log-probs. Run: `.venv/bin/python bench/posttrain.py`
(about two minutes).
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from shipyard.demo.profile import RECIPE as DEFAULT_RECIPE
from shipyard.demo.tiny import build_tiny_model
from shipyard.posttraining.data import load_stage_data
from shipyard.posttraining.posttrain import train_stage
from shipyard.posttraining.recipe import load_recipe
from shipyard.quiet import quiet_libraries

ROUNDS = 5


# The peer, and the peer with Shipyard's two extra settings (a log line per step, a data seed): the second tells
# whether a gap between Shipyard and the peer is those settings or Shipyard's own code.
PEERS: dict[str, dict[str, int]] = {"trl": {}, "trl-log-every-step": {"logging_steps": 1, "data_seed": 0}}


def train(kind: str, model_dir: Path, **device: bool) -> float:
    """Seconds from building the trainer to the end of the recipe's preference stage: Shipyard's, or TRL's
    `DPOTrainer` as one would call it directly with the same hyper-parameters (`PEERS[kind]` added); `device`
    goes to `DPOConfig`."""
    import peft  # noqa: F401  (train_stage imports it on its first call: imported here, both sides time training)
    from trl.trainer.dpo_config import DPOConfig
    from trl.trainer.dpo_trainer import DPOTrainer
    from trl.trainer.sft_trainer import SFTTrainer  # noqa: F401  (likewise)

    quiet_libraries()
    stage = load_recipe(DEFAULT_RECIPE).stages[0]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = load_stage_data(DEFAULT_RECIPE, stage, tokenizer)
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        if kind == "shipyard":
            train_stage(model, tokenizer, stage, data, Path(work))
        else:
            args = DPOConfig(
                output_dir=work,
                per_device_train_batch_size=stage.batch_size,
                learning_rate=stage.learning_rate,
                max_steps=stage.max_steps or -1,
                max_length=stage.max_length,
                beta=stage.beta,
                seed=stage.seed,
                precompute_ref_log_probs=True,
                report_to="none",
                save_strategy="no",
                disable_tqdm=True,
                **PEERS[kind],
                **device,
            )
            DPOTrainer(model=model, args=args, train_dataset=data.dataset, processing_class=tokenizer).train()
        return time.perf_counter() - start


def one(kind: str, model_dir: Path) -> dict[str, float]:
    seconds = train(kind, model_dir, use_cpu=True, bf16=False, gradient_checkpointing=False)
    return {"seconds": seconds, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    if len(sys.argv) == 3:
        print(json.dumps(one(sys.argv[1], Path(sys.argv[2]))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(Path(tmp) / "model")
        runs: dict[str, list[dict[str, float]]] = {"shipyard": [], "trl": []}
        for _ in range(ROUNDS):
            for kind in runs:
                out = subprocess.run(
                    [sys.executable, __file__, kind, str(model_dir)], check=True, capture_output=True, text=True
                ).stdout
                runs[kind].append(json.loads(out.strip().splitlines()[-1]))
    result = {
        kind: {key: statistics.median(r[key] for r in rs) for key in ("seconds", "max_rss_mb")}
        for kind, rs in runs.items()
    }
    result["ratio"] = {key: result["shipyard"][key] / result["trl"][key] for key in ("seconds", "max_rss_mb")}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
