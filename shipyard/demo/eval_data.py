"""The demo's capability eval data (its arithmetic task), and the script that writes it.

Held-out two-digit additions only (the RL run never trains on them), each problem once:
`arithmetic_heldout.jsonl` for exact-match generation, and
`arithmetic_choice.jsonl`, the same kind of problem as a four-way multiple
choice (the sum, off by one, off by ten, digits reversed). Run
`python -m shipyard.demo.eval_data` to write `shipyard/demo/data/`; a test checks the files match.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from shipyard.demo.arithmetic import distinct_problems

DATA_DIR = Path(__file__).parent / "data"
SIZE = 200


def heldout_rows() -> list[dict[str, Any]]:
    return [{"question": p.question, "answer": p.answer} for p in distinct_problems(SIZE, seed=777, held_out=True)]


def choice_rows() -> list[dict[str, Any]]:
    rng = random.Random("choice")
    rows = []
    for p in distinct_problems(SIZE, seed=778, held_out=True):
        total = int(p.answer)
        distractors = list(dict.fromkeys(str(x) for x in (total + 1, total - 10, int(p.answer[::-1]), total + 10)))
        choices = [p.answer, *[d for d in distractors if d != p.answer][:3]]
        rng.shuffle(choices)
        rows.append({"question": p.question, "choices": choices, "label": choices.index(p.answer)})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def main() -> None:
    write_jsonl(DATA_DIR / "arithmetic_heldout.jsonl", heldout_rows())
    write_jsonl(DATA_DIR / "arithmetic_choice.jsonl", choice_rows())


if __name__ == "__main__":
    main()
