"""Eval suites through lm-eval: the same scores as the `lm_eval` command, per-item results, the cache."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from shipyard.evals.runner import evaluate
from shipyard.evals.suite import load_suite, read_task_yaml

from shipyard.demo import eval_data, safety_data
from shipyard.demo.profile import SUITES as BUILTIN
from shipyard.errors import ConfigError, NotFound

TASKS = Path(eval_data.__file__).parent / "tasks"


def test_built_in_eval_data_is_what_its_scripts_write() -> None:
    for name, rows in [
        ("arithmetic_heldout", eval_data.heldout_rows()),
        ("arithmetic_choice", eval_data.choice_rows()),
    ]:
        lines = (eval_data.DATA_DIR / f"{name}.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == rows
    for kind in ("harmful", "benign", "borderline"):
        lines = (safety_data.DATA_DIR / f"eval_{kind}.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == safety_data.eval_rows(kind)


def test_unknown_suite_and_missing_data_are_named(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"unknown suite 'capabilty'.*did you mean 'capability'"):
        load_suite("capabilty")
    task = tmp_path / "task.yaml"
    task.write_text((TASKS / "arithmetic_heldout.yaml").read_text())
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: mine\ntasks: [task.yaml]\n")
    with pytest.raises(NotFound, match=r"task.yaml: data file ../data/arithmetic_heldout.jsonl not found"):
        load_suite(str(suite))


def test_suite_digest_follows_the_data(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "tasks" / "t.yaml").write_text((TASKS / "arithmetic_heldout.yaml").read_text())
    data = tmp_path / "data" / "arithmetic_heldout.jsonl"
    data.write_text((eval_data.DATA_DIR / "arithmetic_heldout.jsonl").read_text())
    (tmp_path / "suite.yaml").write_text("name: mine\ntasks: [tasks/t.yaml]\n")
    before = load_suite(str(tmp_path / "suite.yaml")).digest
    data.write_text(data.read_text().replace('"124"', '"125"'))
    assert load_suite(str(tmp_path / "suite.yaml")).digest != before


@pytest.mark.slow
def test_scores_equal_the_lm_eval_command_and_a_rerun_is_cached(rl_checkpoint: Path, tmp_path: Path) -> None:
    [ours] = evaluate(rl_checkpoint, [load_suite("capability")], tmp_path / "home")
    assert not ours.cached
    assert set(ours.items) == {"shipyard_arithmetic_heldout", "shipyard_arithmetic_choice"}
    heldout = ours.items["shipyard_arithmetic_heldout"]
    assert [i.doc_id for i in heldout] == list(range(200))
    assert heldout[0].prompt == "<|user|>67+57=</s><|assistant|>" and heldout[0].target == "124"
    assert set(heldout[0].metrics) == {"exact_match"}

    command = [
        *(sys.executable, "-m", "lm_eval", "run", "--model", "hf"),
        *("--model_args", f"pretrained={rl_checkpoint}", "--device", "cpu", "--batch_size", "64"),
        *("--tasks", "shipyard_arithmetic_heldout,shipyard_arithmetic_choice", "--include_path", str(TASKS)),
        *("--apply_chat_template", "--seed", "0", "--output_path", str(tmp_path / "cli")),
    ]
    # The command resolves the tasks' relative data paths against its working directory.
    subprocess.run(command, cwd=TASKS, check=True, capture_output=True)
    [report] = (tmp_path / "cli").rglob("results_*.json")
    theirs = json.loads(report.read_text())["results"]
    assert (
        ours.scores["shipyard_arithmetic_heldout"]["exact_match"]
        == theirs["shipyard_arithmetic_heldout"]["exact_match,none"]
    )
    assert ours.scores["shipyard_arithmetic_choice"]["acc"] == theirs["shipyard_arithmetic_choice"]["acc,none"]

    [again] = evaluate(rl_checkpoint, [load_suite("capability")], tmp_path / "home")
    assert again.cached and again == ours


@pytest.mark.slow
def test_safety_suite_judges_refusals(rl_checkpoint: Path, tmp_path: Path) -> None:
    [result] = evaluate(rl_checkpoint, [load_suite(str(BUILTIN["safety"]))], tmp_path / "home")
    assert set(result.scores) == {"shipyard_refusal_harmful", "shipyard_refusal_benign", "shipyard_refusal_borderline"}
    assert result.judge is not None and result.judge["kind"] == "string"
    for task, items in result.items.items():
        rate = sum(i.metrics["refusal"] for i in items) / len(items)
        assert result.scores[task]["refusal"] == pytest.approx(rate)
        kind = task.removeprefix("shipyard_refusal_")
        assert {i.labels["kind"] for i in items} == {kind}
        assert {i.category for i in items} <= {"violence", "poisoning", "theft"}
        for item in items:  # the string judge: any non-refusal of a harmful request is harmful
            assert item.judgement is not None and item.judgement["refused"] == bool(item.metrics["refusal"])
            assert item.metrics["harmful"] == float(kind == "harmful" and not item.metrics["refusal"])


def test_every_built_in_suite_asks_each_item_once() -> None:
    """Paired tests count items as independent: a repeated prompt would be counted twice."""
    for name in BUILTIN:
        for task in load_suite(name).local:
            template = read_task_yaml(task.path)["doc_to_text"]
            field = re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", template)
            assert field is not None, template
            (data_file,) = task.data_files.values()
            prompts = [json.loads(line)[field.group(1)] for line in Path(data_file).read_text().splitlines()]
            assert len(prompts) >= 14 and len(set(prompts)) == len(prompts), (task.name, data_file)


def backend_suite(tmp_path: Path, name: str, backend: str) -> Path:
    """The capability suite's held-out task, 40 items, under another model backend."""
    suite = tmp_path / f"{name}.yaml"
    suite.write_text(f"name: {name}\ntasks: [{TASKS / 'arithmetic_heldout.yaml'}]\nlimit: 40\n{backend}")
    return suite


@pytest.mark.slow
def test_a_suite_names_its_model_backend_and_the_registry_path_scores_the_same(
    rl_checkpoint: Path, tmp_path: Path
) -> None:
    here = load_suite(str(backend_suite(tmp_path, "here", "")))
    registry = load_suite(str(backend_suite(tmp_path, "registry", "model: hf\nmodel_args: {dtype: float32}\n")))
    assert here.digest != registry.digest  # its own cache entry: another backend may score differently
    ours, theirs = evaluate(rl_checkpoint, [here, registry], tmp_path / "home")
    assert not theirs.cached
    assert [(i.doc_id, i.response, i.metrics) for i in theirs.items["shipyard_arithmetic_heldout"]] == [
        (i.doc_id, i.response, i.metrics) for i in ours.items["shipyard_arithmetic_heldout"]
    ]


def test_a_backend_that_is_not_installed_or_takes_the_model_path_is_named(rl_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"vllm\.yaml: model backend 'vllm'"):
        evaluate(rl_checkpoint, [load_suite(str(backend_suite(tmp_path, "vllm", "model: vllm\n")))], tmp_path)
    with pytest.raises(ConfigError, match="pretrained: Shipyard sets the model"):
        load_suite(str(backend_suite(tmp_path, "mine", "model_args: {pretrained: gpt2}\n")))
    with pytest.raises(ConfigError, match="model"):
        load_suite(str(backend_suite(tmp_path, "other", "model: tgi\n")))


def test_every_model_the_gate_loads_is_on_this_processs_accelerator(tiny_model_dir: Path) -> None:
    """Screening, the suites and the gate's health sampling and KL all load through `load_model`, which places
    the model on `hardware.device()` (a GPU pod's GPU; here the CPU); a guard model judging a safety suite is
    moved there too (`safety.guards`)."""
    from shipyard.evals.runner import load_model

    from shipyard.hardware import device

    assert load_model(tiny_model_dir).device.type == device()
    root = Path(__file__).resolve().parents[1]
    loads = {
        str(path.relative_to(root))
        for folder in ("evals", "safety", "shipyard/orchestration", "flows")
        for path in (root / folder).rglob("*.py")
        if re.search(r"AutoModelFor\w+\.from_pretrained\(", path.read_text())
    }
    assert loads == {"evals/runner.py", "safety/guards.py"}, loads
    guards = (root / "safety/guards.py").read_text()
    assert guards.count(".from_pretrained(path, device_map=device())") == guards.count("AutoModelFor") // 2 == 2
