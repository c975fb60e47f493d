"""The demo's verifiable task: two-digit addition, posed as a one-turn chat.

Holds the problems, the fixed train/held-out split, the rewards the RL run
optimises, and greedy held-out accuracy. Called by the demo RL run
(`shipyard.demo.rl_run`) and by tests; the eval suites ship the same held-out
problems as data.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from shipyard.posttraining.generate import greedy

FORMAT_REWARD = 0.1
_ANSWER = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Problem:
    a: int
    b: int

    @property
    def question(self) -> str:
        return f"{self.a}+{self.b}="

    @property
    def answer(self) -> str:
        return str(self.a + self.b)

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.question}]


def is_held_out(problem: Problem) -> bool:
    """A fixed tenth of all pairs, chosen by hash, never trained on by any seed."""
    return hashlib.sha256(problem.question.encode()).digest()[0] % 10 == 0


def sample_problems(n: int, seed: int, held_out: bool = False) -> list[Problem]:
    """`n` problems drawn with replacement from the train or held-out split."""
    rng = random.Random(seed)
    out: list[Problem] = []
    while len(out) < n:
        problem = Problem(rng.randint(10, 99), rng.randint(10, 99))
        if is_held_out(problem) == held_out:
            out.append(problem)
    return out


def distinct_problems(n: int, seed: int, held_out: bool = False) -> list[Problem]:
    """`n` different problems from the train or held-out split: an eval suite whose items repeat counts them twice."""
    rng = random.Random(seed)
    out: dict[Problem, None] = {}
    while len(out) < n:
        problem = Problem(rng.randint(10, 99), rng.randint(10, 99))
        if is_held_out(problem) == held_out:
            out[problem] = None
    return list(out)


def exact_reward(completion: str, answer: str) -> float:
    """1.0 when the completion is the answer and nothing else."""
    return 1.0 if completion.strip() == answer else 0.0


def format_reward(completion: str) -> float:
    """A small reward for answering with a bare number."""
    return FORMAT_REWARD if _ANSWER.fullmatch(completion.strip()) else 0.0


def _content(completion: str | list[dict[str, str]]) -> str:
    return completion if isinstance(completion, str) else completion[-1]["content"]


def trl_exact_reward(
    completions: Sequence[str | list[dict[str, str]]], answer: Sequence[str], **_: object
) -> list[float]:
    """`exact_reward` in the shape TRL's GRPO trainer calls reward functions."""
    return [exact_reward(_content(c), a) for c, a in zip(completions, answer, strict=True)]


def trl_format_reward(completions: Sequence[str | list[dict[str, str]]], **_: object) -> list[float]:
    """`format_reward` in the shape TRL's GRPO trainer calls reward functions."""
    return [format_reward(_content(c)) for c in completions]


def prompt_text(tokenizer: PreTrainedTokenizerBase, problem: Problem, answer: str | None = None) -> str:
    """The chat-rendered prompt of `problem`, followed by `answer` as the assistant turn if given."""
    messages = problem.messages()
    if answer is None:
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    messages.append({"role": "assistant", "content": answer})
    return str(tokenizer.apply_chat_template(messages, tokenize=False))


def greedy_answers(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, problems: Sequence[Problem], batch_size: int = 256
) -> list[str]:
    """The model's greedy completion of each problem's prompt."""
    return greedy(model, tokenizer, [p.messages() for p in problems], max_new_tokens=6, batch_size=batch_size)


def accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, problems: Sequence[Problem]) -> float:
    """Fraction of `problems` the model answers exactly, greedily."""
    answers = greedy_answers(model, tokenizer, problems)
    return sum(exact_reward(r, p.answer) for r, p in zip(answers, problems, strict=True)) / len(problems)
