"""The evidence an approver reads: every gate check and each score against the champion, from the manifest."""

import json
import shutil
from pathlib import Path

from shipyard.registry.evidence import evidence
from shipyard.registry.publish import promote, publish
from shipyard.registry.stores import LocalStore

from .helpers import gated


def candidate(tiny_model_dir: Path, out: Path, accuracy: float, passed: bool, **lineage_extra: object) -> Path:
    shutil.copytree(tiny_model_dir, out)
    (out / "config.json").write_text((tiny_model_dir / "config.json").read_text() + f"\n{' ' * int(accuracy * 8)}")
    checks = [
        {"name": "floor: arith", "passed": passed, "statistic": accuracy, "threshold": "≥ 0.3", "detail": "exact"},
        {
            "name": "regression: arith",
            "passed": True,
            "statistic": -0.01,
            "threshold": "p ≥ 0.05",
            "p_value": 0.41,
            "interval": [-0.05, 0.03],
        },
    ]
    (out / "evals.json").write_text(json.dumps({"arith": {"exact_match": accuracy, "exact_match_stderr": 0.01}}))
    lineage = {"run": "file:///run", "checkpoint_uri": "file:///run/checkpoint-20", "step": 20, **lineage_extra}
    (out / "lineage.json").write_text(json.dumps(lineage))
    return gated(out, passed=passed, checks=checks)


def test_evidence_shows_checks_and_deltas_against_the_champion(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    publish(candidate(tiny_model_dir, tmp_path / "a", 0.5, True), "main", store)
    publish(candidate(tiny_model_dir, tmp_path / "b", 0.625, True), "main", store)
    first = evidence(store, "main", 2)
    assert "champion: none yet" in first and "| arith | exact_match | 0.625 | — |" in first
    promote(store, "main", 1)
    page = evidence(store, "main", 2)
    assert "## main v2: approve for stable?" in page
    assert "| floor: arith | pass | +0.625 | ≥ 0.3 | — | — | exact |" in page  # every check with its numbers
    assert "| regression: arith | pass | -0.010 | p ≥ 0.05 | [-0.050, +0.030] | 0.41 |  |" in page
    assert "- RL run: file:///run, step 20" in page
    assert "| arith | exact_match | 0.625 | +0.125 |" in page
    assert "stderr" not in page
    assert "champion: v1 (stable)" in page and "- checkpoint: file:///run/checkpoint-20" in page


def test_evidence_shows_the_screen_and_its_size_beside_the_gates(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    screen = {"passed": True, "reason": "heldout exact_match 0.510 vs 0.480 …", "task": "heldout", "items": 200}
    made = candidate(tiny_model_dir, tmp_path / "a", 0.5, True, screen=screen | {"mde": 0.0912})
    gate = json.loads((made / "gate.json").read_text())
    stream = {"t": 7, "e_value": 3.2, "level": 0.0004, "blocked": False, "blocks_before": 0, "budget_left": 0.045}
    (made / "gate.json").write_text(json.dumps(gate | {"stream": stream}))  # as run_gate writes it
    publish(made, "main", store)
    page = evidence(store, "main", 1)
    assert "- stream: decision 7 of the line, e-value 3.2 against 1/2.5e+03: e-LOND does not block" in page
    assert "- screening: heldout exact_match 0.510 vs 0.480 …" in page
    assert "| screening: heldout (raw checkpoint) | 200 | 0.091 | — | — |" in page


def test_evidence_shows_the_safety_categories_hostile_cells_kept_in_place(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    made = candidate(tiny_model_dir, tmp_path / "a", 0.5, True)
    gate = json.loads((made / "gate.json").read_text())
    categories = [
        {"category": "violence", "items": 400, "refusal": 0.95, "harmful": 0.02, "over_refusal": 0.1,
         "detectable_effect": 0.062, "sufficient": True, "gated": True},
        {"category": "theft | <b>x</b>", "items": 6, "refusal": 1.0, "harmful": 0.0, "over_refusal": None,
         "detectable_effect": 0.71, "sufficient": False, "gated": False},
        "not a mapping",
    ]  # fmt: skip
    (made / "gate.json").write_text(json.dumps(gate | {"categories": categories}))
    publish(made, "main", store)
    page = evidence(store, "main", 1)
    assert "| violence (gated) | 400 | +0.950 | +0.020 | +0.100 | +0.062 | yes |" in page
    assert "| theft \\| \\<b\\>x\\</b\\> | 6 | +1.000 | +0.000 | — | +0.710 | **no: too coarse to gate on** |" in page
