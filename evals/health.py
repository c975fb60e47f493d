"""RL-health signals: how far a candidate has drifted from its champion, and signs of over-optimization.

On fixed prompts (taken from the suites' items), responses are sampled from
the candidate with a fixed seed; their log-probabilities under both models
give a sequence-level estimate of KL(candidate || champion). Response length
(mean, p95), the share cut at the token limit, and the share of repeated
3-grams describe the responses themselves. From the trainer's own logs, train
reward rising while the held-out score falls is flagged as over-optimization.
Used by `shipyard gate`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

HELDOUT_KEYS = ("eval_accuracy", "eval_heldout_accuracy")


@dataclass(frozen=True)
class Sample:
    tokens: list[int]  # the response, up to and without the end of turn
    truncated: bool


@dataclass(frozen=True)
class Responses:
    mean_length: float
    p95_length: float
    truncation_rate: float
    repetition: float


@torch.no_grad()
def sample(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], max_new_tokens: int, seed: int
) -> list[Sample]:
    """One response per chat-rendered prompt, sampled at temperature 1 with a fixed seed."""
    torch.manual_seed(seed)
    batch = tokenizer(list(prompts), add_special_tokens=False, padding=True, return_tensors="pt").to(model.device)
    settings = {"max_new_tokens": max_new_tokens, "do_sample": True, "top_k": 0, "temperature": 1.0}
    out = model.generate(**batch, **settings, pad_token_id=tokenizer.pad_token_id)  # type: ignore[operator]  # nn.Module.__getattr__ hides generate
    samples = []
    for row in out[:, batch["input_ids"].shape[1] :].tolist():
        end = row.index(tokenizer.eos_token_id) if tokenizer.eos_token_id in row else None
        samples.append(Sample(row[:end] if end is not None else row, end is None))
    return samples


def describe(samples: Sequence[Sample]) -> Responses:
    lengths = sorted(len(s.tokens) for s in samples)
    p95 = lengths[min(len(lengths) - 1, math.ceil(0.95 * len(lengths)) - 1)]
    return Responses(
        mean_length=sum(lengths) / len(lengths),
        p95_length=float(p95),
        truncation_rate=sum(s.truncated for s in samples) / len(samples),
        repetition=sum(repeated_ngrams(s.tokens) for s in samples) / len(samples),
    )


def repeated_ngrams(tokens: Sequence[int], n: int = 3) -> float:
    """Share of the response's n-grams that already occurred earlier in it."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


@torch.no_grad()
def kl_estimate(
    candidate: PreTrainedModel,
    champion: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    samples: Sequence[Sample],
) -> float:
    """Mean over the candidate's samples of log p_candidate(response) - log p_champion(response), in nats."""
    total = 0.0
    for prompt, s in zip(prompts, samples, strict=True):
        context = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([context + s.tokens + ([] if s.truncated else [tokenizer.eos_token_id])])
        total += _logprob(candidate, ids, len(context)) - _logprob(champion, ids, len(context))
    return total / len(samples)


def _logprob(model: PreTrainedModel, ids: torch.Tensor, start: int) -> float:
    ids = ids.to(model.device)
    logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    picked = logprobs.gather(1, ids[0, 1:, None])[:, 0]
    return float(picked[start - 1 :].sum())


def over_optimization(
    log_history: Sequence[dict[str, Any]], window: int = 3, tolerance: float = 0.05
) -> tuple[bool, str]:
    """Whether, over the last `window` evaluations, train reward rose while the held-out score fell by > `tolerance`."""
    evals = [
        (e["step"], next(e[k] for k in HELDOUT_KEYS if k in e))
        for e in log_history
        if any(k in e for k in HELDOUT_KEYS)
    ]
    if len(evals) < 2:
        return False, "fewer than two held-out evaluations in the trainer's log"
    recent = evals[-window:]
    first_step, last_step = recent[0][0], recent[-1][0]
    rewards = [(e["step"], e["reward"]) for e in log_history if "reward" in e]
    before = [r for step, r in rewards if step <= first_step][-window:]
    after = [r for step, r in rewards if first_step < step <= last_step][-window:]
    if not before or not after:
        return False, "no train reward logged around the held-out evaluations"
    reward_change = sum(after) / len(after) - sum(before) / len(before)
    heldout_change = recent[-1][1] - recent[0][1]
    detail = f"steps {first_step}..{last_step}: train reward {reward_change:+.3f}, held-out score {heldout_change:+.3f}"
    return reward_change > 0 and heldout_change < -tolerance, detail
