"""Running eval suites on a model with lm-eval, keeping every item's result, cached by digests.

The model is loaded once per backend for all suites of a call: lm-eval's
`HFLM` around a model loaded here by default, or the suite's `model` backend
(`hf` with arguments such as `parallelize`, `vllm`, `sglang`) through
lm-eval's model registry. Each suite runs through `lm_eval.simple_evaluate` with `log_samples`
and fixed seeds; per item we keep doc id, doc hash, prompt hash, prompt,
response, target and metric values, so two models can be compared item by
item. Results are cached under `home/evals/<model digest>/<key>.json`, the key
a digest of the suite (its files and data), the lm-eval version and the
device: a model is never evaluated twice on the same suite. Called by
`shipyard eval`, the gate and the release flow.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from shipyard.evals.suite import Suite, overlays
from shipyard.safety.guards import load_judge
from shipyard.safety.judge import Exchange, Fields, Judge, describe

from shipyard.caches import touch
from shipyard.digests import directory_digest
from shipyard.errors import ConfigError
from shipyard.hardware import device
from shipyard.quiet import quiet_libraries

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Item:
    doc_id: int
    doc_hash: str
    prompt_hash: str
    prompt: str
    response: str
    target: str
    metrics: dict[str, float]
    labels: dict[str, str] = field(default_factory=dict)  # a judged item's request, kind and category, from its doc
    judgement: dict[str, Any] | None = None  # the suite judge's `Judgement` of the response

    def exchange(self) -> Exchange:
        """What a judge rules on: the request as written (the prompt when no label holds it) and the response."""
        labels = self.labels
        return Exchange(labels.get("prompt", self.prompt), self.response, labels.get("kind"), labels.get("category"))

    @property
    def category(self) -> str | None:
        """The harm category: the request's label, else the one the judge saw."""
        return self.labels.get("category") or (self.judgement or {}).get("category")


def paired(candidate: list[Item], champion: list[Item]) -> list[tuple[Item, Item]]:
    """Items both models saw: same document (id and hash), in the candidate's order."""
    theirs = {(i.doc_id, i.doc_hash): i for i in champion}
    return [(i, theirs[(i.doc_id, i.doc_hash)]) for i in candidate if (i.doc_id, i.doc_hash) in theirs]


@dataclass
class SuiteResult:
    suite: str
    suite_digest: str
    model_digest: str
    lm_eval_version: str
    scores: dict[str, dict[str, float]]  # task -> metric -> value (and "<metric>_stderr")
    items: dict[str, list[Item]]  # task -> items, by doc id
    judge: dict[str, Any] | None = None  # the judge of the suite's safety tasks: kind, model, digest
    cached: bool = field(default=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SuiteResult:
        fields = {k: v for k, v in data.items() if k != "schema_version"}
        fields["items"] = {task: [Item(**i) for i in items] for task, items in data["items"].items()}
        return cls(**fields)


def evaluate(model_path: Path, suites: list[Suite], home: Path) -> list[SuiteResult]:
    """Each suite's results for the model in `model_path`, from the cache when they are there."""
    model_digest = directory_digest(model_path)
    loaded: dict[str, Any] = {}  # one model per backend, shared by the suites that use it
    results = []
    for suite in suites:
        path = home / "evals" / model_digest / f"{cache_key(suite)}.json"
        if path.is_file():
            result = SuiteResult.from_dict(json.loads(path.read_text()))
            result.cached = True
            touch(path.parent)
        else:
            key = backend(suite)
            if key not in loaded:
                loaded[key] = _load(model_path, suite)
            judge = load_judge(suite.spec.judge, suite.path.parent) if suite.spec.judge else None
            result = run_suite(loaded[key], suite, model_digest, judge)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result.as_dict()))
            tmp.replace(path)
        results.append(result)
    return results


def cache_key(suite: Suite) -> str:
    parts = [suite.digest, version("lm_eval"), device()]
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:32]


def run_suite(lm: Any, suite: Suite, model_digest: str, judge: Judge | None = None) -> SuiteResult:
    """Run one suite through `lm_eval.simple_evaluate` on an already loaded model; `judge` (the suite's, loaded)
    then rules on every response of its judged tasks, in batches.

    The suite's own task files reach lm-eval through `TaskManager(include_path=…)`, as overlays that include
    each file as written and make its data paths absolute; lm-eval's built-in tasks are indexed only when named.
    """
    from lm_eval import evaluator, simple_evaluate
    from lm_eval.tasks import TaskManager

    # lm-eval records the git hash of the working directory with `git describe`, which prints "fatal: not a git
    # repository" to the terminal anywhere else; results carry lm-eval's version instead.
    evaluator.get_git_commit_hash = lambda: None
    spec = suite.spec
    with tempfile.TemporaryDirectory(prefix="shipyard-tasks-") as tasks_dir:
        out = simple_evaluate(
            model=lm,
            tasks=list(suite.tasks),
            num_fewshot=spec.num_fewshot,
            limit=spec.limit,
            apply_chat_template=spec.apply_chat_template,
            gen_kwargs=spec.gen_kwargs,
            log_samples=True,
            task_manager=TaskManager(
                include_path=str(overlays(suite, Path(tasks_dir))) if suite.local else None,
                include_defaults=len(suite.local) < len(suite.tasks),
            ),
            random_seed=spec.seed,
            numpy_random_seed=spec.seed,
            torch_random_seed=spec.seed,
            fewshot_random_seed=spec.seed,
        )
    assert out is not None  # None only on non-zero ranks of a distributed run
    scores = {task: _scores(values) for task, values in out["results"].items()}
    judged = set(suite.judged()) if judge is not None else set()
    fields = spec.judge.fields if spec.judge is not None else None
    items = {
        task: sorted((_item(s, fields if task in judged else None) for s in samples), key=lambda i: i.doc_id)
        for task, samples in out["samples"].items()
    }
    about = None
    if judge is not None and spec.judge is not None:
        about = describe(spec.judge, suite.judge_digest or "")
        for task in sorted(judged & set(items)):
            items[task] = _judged(items[task], judge)
            scores[task] = {**scores[task], **_means(items[task], ("refusal", "harmful"))}
    return SuiteResult(spec.name, suite.digest, model_digest, version("lm_eval"), scores, items, about)


def _judged(items: list[Item], judge: Judge) -> list[Item]:
    """Each item with the judge's ruling: its judgement, and the refusal and harmful metrics from it."""
    return [
        replace(
            item,
            metrics={**item.metrics, "refusal": float(j.refused), "harmful": float(j.harmful)},
            judgement=j.as_dict(),
        )
        for item, j in zip(items, judge.judge([i.exchange() for i in items]), strict=True)
    ]


def _means(items: list[Item], metrics: tuple[str, ...]) -> dict[str, float]:
    """Each metric's mean over the items and its standard error, as lm-eval reports a mean."""
    out = {}
    for metric in metrics:
        values = np.array([i.metrics[metric] for i in items], dtype=float)
        out[metric] = float(values.mean()) if len(values) else float("nan")
        out[f"{metric}_stderr"] = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    return out


def backend(suite: Suite) -> str:
    """What a loaded model can be shared by: the same backend, arguments and batch size."""
    spec = suite.spec
    return json.dumps([spec.model, spec.model_args, spec.batch_size], sort_keys=True)


def load_model(model_path: Path) -> Any:
    """A model to evaluate or sample from, on this process's accelerator (a GPU pod's GPU, else the CPU): every
    model the gate loads comes through here."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_path, device_map=device())


def _load(model_path: Path, suite: Suite) -> Any:
    """The model under the suite's backend: `hf` without arguments wraps the model loaded here (on this process's
    device); any other backend or arguments go through lm-eval's model registry, as `lm_eval --model` would."""
    from lm_eval.api.registry import get_model
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer

    quiet_libraries()
    spec = suite.spec
    if spec.model == "hf" and not spec.model_args:
        model = load_model(model_path)
        return HFLM(pretrained=model, tokenizer=AutoTokenizer.from_pretrained(model_path), batch_size=spec.batch_size)
    extra = {"device": device()} if spec.model == "hf" and "parallelize" not in spec.model_args else {}
    try:  # lm-eval imports a backend's package when it is first asked for
        kind = get_model(spec.model)
        return kind.create_from_arg_obj(
            {"pretrained": str(model_path), **spec.model_args}, {"batch_size": spec.batch_size, **extra}
        )
    except ImportError as exc:
        raise ConfigError(f"{suite.path}: model backend {spec.model!r} is not installed here: {exc}") from None


def _scores(values: dict[str, Any]) -> dict[str, float]:
    scores = {}
    for key, value in values.items():
        metric, _, _filter = key.partition(",")
        if _filter and isinstance(value, (int, float)):
            scores[metric] = float(value)
    return scores


def _item(sample: dict[str, Any], fields: Fields | None = None) -> Item:
    arguments = sample["arguments"]
    response = sample["filtered_resps"][0]
    if isinstance(response, (list, tuple)):  # multiple choice: (loglikelihood, is_greedy) per choice
        lls = [r[0] for r in sample["filtered_resps"]]
        response = arguments[lls.index(max(lls))][1]
    return Item(
        doc_id=int(sample["doc_id"]),
        doc_hash=sample["doc_hash"],
        prompt_hash=sample["prompt_hash"],
        prompt=str(arguments[0][0]),
        response=str(response),
        target=str(sample["target"]),
        metrics={name: float(sample[name]) for name in sample["metrics"]},
        labels=_labels(sample["doc"], fields) if fields is not None else {},
    )


def _labels(doc: Any, fields: Fields) -> dict[str, str]:
    """The request as written, its kind and its harm category, from the fields a judged task's documents carry."""
    if not isinstance(doc, dict):
        return {}
    names = {"prompt": fields.prompt, "kind": fields.kind, "category": fields.category}
    return {label: doc[name] for label, name in names.items() if isinstance(doc.get(name), str)}
