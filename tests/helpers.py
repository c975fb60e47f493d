"""Helpers shared by tests: checkpoints written the way transformers writes them."""

import json
import shutil
from pathlib import Path

from transformers import AutoModelForCausalLM


def make_checkpoint(run: Path, step: int, model_dir: Path, **save: object) -> Path:
    ckpt = run / f"checkpoint-{step}"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.save_pretrained(ckpt, **save)
    shutil.copy(model_dir / "tokenizer.json", ckpt)
    (ckpt / "optimizer.pt").write_bytes(b"not weights, never read")
    (ckpt / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": step, "reward": step / 100}]}))
    return ckpt
