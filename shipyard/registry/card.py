"""The model card of a release: huggingface_hub's `ModelCard`, with eval results and release notes.

Eval scores from the manifest become a `model-index` block; the release notes
list each score's change against the previous release of the line, the
checkpoint it came from, and the gate's verdict. Called by the Hub mirror.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData


def model_card(line: str, version: int, manifest: dict[str, Any], previous: dict[str, Any] | None) -> str:
    scores: dict[str, dict[str, float]] = manifest.get("evals") or {}
    before: dict[str, dict[str, float]] = (previous or {}).get("evals") or {}
    results = [
        EvalResult(
            task_type="text-generation",
            dataset_type=task,
            dataset_name=task,
            metric_type=metric,
            metric_value=value,
        )
        for task, metrics in sorted(scores.items())
        for metric, value in sorted(metrics.items())
        if not metric.endswith("_stderr")
    ]
    data = ModelCardData(model_name=f"{line}-v{version}", eval_results=results or None)
    notes = [
        f"- {task} {metric}: {value:.3f} ({value - before[task][metric]:+.3f} vs the previous release)"
        if metric in before.get(task, {})
        else f"- {task} {metric}: {value:.3f}"
        for task, metrics in sorted(scores.items())
        for metric, value in sorted(metrics.items())
        if not metric.endswith("_stderr")
    ]
    lineage = manifest.get("lineage") or {}
    gate = manifest.get("gate") or {}
    body = [
        f"# {line} v{version}",
        "",
        "Released by Shipyard from an intermediate checkpoint of an RL run, after preference and safety post-training.",
        "",
        "## Release notes",
        "",
        *(notes or ["- no eval scores recorded"]),
        "",
        "## Lineage",
        "",
        f"- checkpoint digest: `{lineage.get('checkpoint_digest', 'unknown')}`",
        f"- recipe digest: `{lineage.get('recipe_digest', 'unknown')}`",
        f"- candidate digest: `{manifest['candidate_digest']}`",
        f"- gate: {'passed' if gate.get('passed') else 'not recorded' if not gate else 'failed'}",
    ]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n"))
