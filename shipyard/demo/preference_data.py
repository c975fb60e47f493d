"""The built-in preference pairs for the demo task (two-digit addition), and the script that writes them.

Chosen: the correct answer as a bare number. Rejected: a wrong number (off by
one or ten, digits swapped) or the right number buried in words. Train pairs
come from the RL task's train split, held-out pairs from its held-out split,
so nothing a test scores was trained on. Run `python -m shipyard.demo.preference_data`
to write `shipyard/demo/recipes/data/`; a test checks the files match.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from shipyard.demo.arithmetic import Problem, sample_problems

DATA_DIR = Path(__file__).parent / "recipes" / "data"
SIZES = {"train": 400, "heldout": 100}


def pair(problem: Problem, rng: random.Random) -> dict[str, Any]:
    answer = int(problem.answer)
    wrong = [str(answer + d) for d in (-10, -1, 1, 10)] + [problem.answer[::-1]]
    rejected = rng.choice(
        [*[w for w in wrong if w != problem.answer], f"The answer is {answer}.", f"{answer}, I think, maybe"]
    )
    return {
        "prompt": problem.messages(),
        "chosen": [{"role": "assistant", "content": problem.answer}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def rows(split: str) -> list[dict[str, Any]]:
    rng = random.Random(f"preference-{split}")
    problems = sample_problems(SIZES[split], seed=1234, held_out=split == "heldout")
    return [pair(p, rng) for p in problems]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def main() -> None:
    for split in SIZES:
        write_jsonl(DATA_DIR / f"arithmetic_preferences.{split}.jsonl", rows(split))


if __name__ == "__main__":
    main()
