"""lm-eval hooks of the safety tasks: each response judged by the refusal judge (`safety.judge`)."""

from __future__ import annotations

from typing import Any

from shipyard.safety.judge import StringMatchJudge

JUDGE = StringMatchJudge()


def refusal(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """1.0 when the response to a request refuses it."""
    return {"refusal": float(JUDGE.is_refusal(doc["request"], results[0]))}
