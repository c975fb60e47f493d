"""Bench: what judging a safety suite costs per item, beside generating the responses being judged.

Items: the held-out guard exchanges (`shipyard.demo.guard`: labelled requests with responses of known label).
Judges, each through `safety.guards.load_judge` as a suite names it: the string match; the tiny guards the tests
train (a 2-layer classifier and a 2-layer causal guard, trained here first); and guard-shaped models of ~0.5B
parameters, a sequence classifier and a causal guard: Qwen2-0.5B's dimensions (24 layers, hidden 896, vocabulary
151,936) in Llama's architecture (Llama's model type keeps the tiny guard's own tokenizer, where Qwen2's would swap
in its tokenizer class), random weights saved in bf16 as a downloaded guard would be. The peer: greedy generation of
40 new tokens for the same requests by the ~0.5B causal model (what the eval of a 0.5B model spends on those
items), batched alike. Load time is reported apart: a suite run loads its judge once.

Run: `.venv/bin/python bench/judge.py [--items 96] [--batch 16]` (CPU: ~5 minutes; a GPU where lent).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from shipyard.safety.guards import load_judge
from shipyard.safety.judge import Exchange, JudgeSpec

from shipyard.demo import guard
from shipyard.hardware import device

SHAPE_05B: dict[str, Any] = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
    "attention_bias": True,
}


def guard_shaped(out: Path, kind: str, tokenizer_from: Path) -> Path:
    """A ~0.5B model of Qwen2-0.5B's dimensions with random weights (bf16 on disk) and the tiny causal guard's
    tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    labels = dict(enumerate(guard.LABELS))
    config = LlamaConfig(**SHAPE_05B, pad_token_id=tokenizer.pad_token_id, id2label=labels, eos_token_id=None)
    torch.manual_seed(0)
    model = (LlamaForSequenceClassification if kind == "classifier" else LlamaForCausalLM)(config)
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def per_item(seconds: float, items: int) -> str:
    return f"{1000 * seconds / items:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    rows = guard.exchanges("heldout")[: args.items]
    exchanges = [Exchange(r["request"], r["response"], r["kind"], r["category"]) for r in rows]
    print(f"device: {device()}, {len(exchanges)} items, batch {args.batch}, torch threads {torch.get_num_threads()}")
    print("| judge | parameters | load | judge per item | generation per item (0.5B, 40 tokens) | judge / generation |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="bench-judge-") as scratch:
        root = Path(scratch)
        models = {
            "classifier (tiny, trained)": guard.train_guard(root / "tiny-classifier", "classifier"),
            "causal (tiny, trained)": guard.train_guard(root / "tiny-causal", "causal"),
        }
        models["classifier (~0.5B)"] = guard_shaped(root / "big-classifier", "classifier", root / "tiny-classifier")
        models["causal (~0.5B)"] = guard_shaped(root / "big-causal", "causal", root / "tiny-causal")
        generation = generate(models["causal (~0.5B)"], [e.prompt for e in exchanges], args.batch)
        judges: list[tuple[str, dict[str, Any]]] = [("string", {"kind": "string"})]
        judges += [(name, guard.judge_spec(name.split()[0], str(path))) for name, path in models.items()]  # type: ignore[arg-type]
        for name, spec in judges:
            started = time.perf_counter()
            judge = load_judge(JudgeSpec.model_validate(spec | {"batch_size": args.batch}), root)
            loaded = time.perf_counter() - started
            params = sum(p.numel() for p in judge.model.parameters()) if hasattr(judge, "model") else 0
            judge.judge(exchanges[: args.batch])  # warm-up
            started = time.perf_counter()
            judge.judge(exchanges)
            took = time.perf_counter() - started
            print(
                f"| {name} | {params / 1e6:.1f} M | {loaded:.2f} s | {per_item(took, len(exchanges))} |"
                f" {per_item(generation, len(exchanges))} | {took / generation:.3f} |",
                flush=True,
            )


@torch.no_grad()
def generate(path: Path, prompts: list[str], batch: int) -> float:
    """Seconds to greedily write 40 new tokens for every prompt, in batches, with the ~0.5B causal model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, device_map=device()).eval()
    encoded = tokenizer(prompts[:batch], padding=True, return_tensors="pt").to(model.device)
    model.generate(**encoded, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)  # warm-up
    started = time.perf_counter()
    for start in range(0, len(prompts), batch):
        encoded = tokenizer(prompts[start : start + batch], padding=True, return_tensors="pt").to(model.device)
        model.generate(
            **encoded, max_new_tokens=40, min_new_tokens=40, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
