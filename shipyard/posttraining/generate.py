"""Greedy chat responses and answer log-probabilities of a local model, in batches.

Used to measure a model directly where a test or the demo needs it (held-out
accuracy of the RL run, preference margins, refusal rates); the release gate
measures through lm-eval.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

Messages = list[dict[str, str]]


def chat_prompt(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> str:
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


@torch.no_grad()
def greedy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Messages],
    max_new_tokens: int,
    batch_size: int = 256,
) -> list[str]:
    """The model's greedy reply to each conversation."""
    was_training = model.training
    model.eval()
    replies: list[str] = []
    for start in range(0, len(conversations), batch_size):
        prompts = [chat_prompt(tokenizer, c) for c in conversations[start : start + batch_size]]
        batch = tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt").to(model.device)
        out = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )  # type: ignore[operator]  # nn.Module.__getattr__ hides generate
        replies += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    model.train(was_training)
    return replies


@torch.no_grad()
def answer_logprob(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: Messages, answer: str) -> float:
    """Sum of the log-probabilities of `answer` (and its end of turn) as the reply to `prompt`."""
    context = chat_prompt(tokenizer, prompt)
    full = str(tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": answer}], tokenize=False))
    ids = tokenizer(full, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
    start = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    picked = logprobs.gather(1, targets[:, None])[:, 0]
    return float(picked[start - 1 :].sum())
