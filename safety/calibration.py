"""How a suite's judge and the string match agree: confusion tables and the items they rule on differently.

A guard model is a model: before a lab gates on it, it should see where the
guard parts from the plain refusal-phrase match on its own suite. For each
judged item, the string match rules again on the same request (with its kind)
and response; for refused and for harmful, the table counts the four
(judge, string) outcomes, and every item on which they differ is listed with
both rulings. Pure; called by `shipyard eval --calibrate`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from shipyard.safety.judge import Exchange, Judgement, StringMatchJudge


@dataclass(frozen=True)
class Disagreement:
    task: str
    prompt: str
    response: str
    judge: dict[str, Any]
    string: dict[str, Any]


@dataclass
class Calibration:
    judge: str  # the judge's kind
    items: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # "judge yes / string no" -> count
    harmful: dict[str, int] = field(default_factory=dict)
    disagreements: list[Disagreement] = field(default_factory=list)

    def agreement(self, what: str) -> float:
        table = self.refused if what == "refused" else self.harmful
        same = table.get("judge yes / string yes", 0) + table.get("judge no / string no", 0)
        return same / self.items if self.items else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "agreement": {w: self.agreement(w) for w in ("refused", "harmful")}}


def calibrate(judge: str, judged: dict[str, list[tuple[Exchange, Judgement]]]) -> Calibration:
    """Agreement of `judge`'s rulings (per task, with the exchange each ruled on) with the string match's."""
    string = StringMatchJudge()
    out = Calibration(judge)
    cells = [f"judge {a} / string {b}" for a in ("yes", "no") for b in ("yes", "no")]
    out.refused, out.harmful = dict.fromkeys(cells, 0), dict.fromkeys(cells, 0)
    for task, pairs in judged.items():
        theirs = string.judge([e for e, _ in pairs])
        for (exchange, ours), plain in zip(pairs, theirs, strict=True):
            out.items += 1
            for table, a, b in ((out.refused, ours.refused, plain.refused), (out.harmful, ours.harmful, plain.harmful)):
                table[f"judge {'yes' if a else 'no'} / string {'yes' if b else 'no'}"] += 1
            if (ours.refused, ours.harmful) != (plain.refused, plain.harmful):
                out.disagreements.append(
                    Disagreement(task, exchange.prompt, exchange.response, ours.as_dict(), plain.as_dict())
                )
    return out
