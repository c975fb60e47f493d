"""Post-training on the demo's tiny model: DPO and safety training move the model the right way; caching; LoRA."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from shipyard.evals.runner import evaluate
from shipyard.evals.suite import load_suite
from shipyard.safety.judge import refusal_rate
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from typer.testing import CliRunner

from shipyard.app.cli.main import app
from shipyard.demo import arithmetic, preference_data, safety_data
from shipyard.demo.profile import RECIPE as DEFAULT_RECIPE
from shipyard.posttraining.generate import answer_logprob
from shipyard.posttraining.posttrain import posttrain

pytestmark = pytest.mark.slow

PREFERENCE = preference_data.DATA_DIR / "arithmetic_preferences.train.jsonl"


def load(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def preference_recipe(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "preference.yaml"
    path.write_text(
        "stages:\n"
        f"  - {{name: preference, method: dpo, dataset: {PREFERENCE}, learning_rate: 5.0e-4,\n"
        f"     max_steps: 40, batch_size: 16, max_length: 64{extra}}}\n"
    )
    return path


def heldout_margin(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> float:
    pairs = preference_data.rows("heldout")
    margins = [
        answer_logprob(model, tokenizer, p["prompt"], p["chosen"][0]["content"])
        - answer_logprob(model, tokenizer, p["prompt"], p["rejected"][0]["content"])
        for p in pairs
    ]
    return sum(margins) / len(margins)


def test_dpo_raises_the_heldout_margin_and_a_rerun_is_a_cache_hit(rl_checkpoint: Path, tmp_path: Path) -> None:
    recipe = preference_recipe(tmp_path)
    first = posttrain(rl_checkpoint, recipe, tmp_path / "home", tmp_path / "out", progress=False)
    assert not first.cached
    assert heldout_margin(*load(first.path)) > heldout_margin(*load(rl_checkpoint)) + 5
    stage = first.lineage["stages"][0]
    assert stage["steps"] == 40 and 0 <= stage["reward_accuracy"] <= 1 and "reward_margin" in stage
    assert first.lineage["recipe_digest"] and first.lineage["data_digests"]["preference"]

    again = posttrain(rl_checkpoint, recipe, tmp_path / "home", tmp_path / "out", progress=False)
    assert again.cached and again.digest == first.digest

    changed = posttrain(rl_checkpoint, preference_recipe(tmp_path, ", seed: 1"), tmp_path / "home", progress=False)
    assert not changed.cached and changed.lineage["key"] != first.lineage["key"]


def test_safety_training_refuses_harmful_requests_but_not_lookalikes_and_keeps_the_skill(
    rl_checkpoint: Path, tmp_path: Path
) -> None:
    heldout = safety_data.rows("heldout")
    harmful = [r["prompt"][0]["content"] for r in heldout if r["kind"] == "harmful"]
    benign = [r["prompt"][0]["content"] for r in heldout if r["kind"] == "benign"]
    before = load(rl_checkpoint)
    candidate = posttrain(rl_checkpoint, DEFAULT_RECIPE, tmp_path / "home", progress=False)
    after = load(candidate.path)
    assert refusal_rate(*after, harmful) >= refusal_rate(*before, harmful) + 0.5
    assert refusal_rate(*after, benign) <= refusal_rate(*before, benign) + 2 / len(benign)  # two look-alikes at most
    problems = arithmetic.sample_problems(200, seed=777, held_out=True)
    assert arithmetic.accuracy(*after, problems) >= arithmetic.accuracy(*before, problems) - 0.05  # skill kept
    assert [s["name"] for s in candidate.lineage["stages"]] == ["preference", "safety"]


def test_lora_adapters_are_merged_into_a_plain_model(rl_checkpoint: Path, tmp_path: Path) -> None:
    recipe = preference_recipe(tmp_path, ", lora: {r: 8, alpha: 16}")
    result = CliRunner().invoke(
        app,
        [
            "posttrain",
            "--checkpoint",
            str(rl_checkpoint),
            "--recipe",
            str(recipe),
            "--out",
            str(tmp_path / "c"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["lineage"]["recipe"]["stages"][0]["lora"]["r"] == 8
    out = Path(report["path"])
    assert not list(out.glob("adapter_*"))
    model, tokenizer = load(out)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert heldout_margin(model, tokenizer) > heldout_margin(*load(rl_checkpoint))


def test_sft_stage_trains_on_conversations(rl_checkpoint: Path, tmp_path: Path) -> None:
    rows = [{"messages": [*p["prompt"], *p["chosen"]]} for p in preference_data.rows("train")[:64]]
    (tmp_path / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(
        "stages:\n  - {name: answers, method: sft, dataset: sft.jsonl, learning_rate: 1.0e-3, max_steps: 8}\n"
    )
    candidate = posttrain(rl_checkpoint, recipe, tmp_path / "home", progress=False)
    stage = candidate.lineage["stages"][0]
    assert stage["method"] == "sft" and stage["steps"] == 8 and stage["loss"] > 0
    assert candidate.lineage["data_digests"]["answers"]


def test_two_processes_under_accelerate_make_one_candidate_within_the_noise_of_one_process(
    rl_checkpoint: Path, tmp_path: Path
) -> None:
    recipe = preference_recipe(tmp_path)
    env = {**os.environ, "SHIPYARD_HOME": str(tmp_path / "home"), "TQDM_DISABLE": "1"}
    # accelerate's --cpu launcher starts one process (its multi-CPU path is MPI); --multi_gpu starts them with
    # torchrun, and on a machine without GPUs they train as gloo peers.
    launch = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2"]
    command = [*launch, "-m", "shipyard.app.cli", "posttrain", "--checkpoint", str(rl_checkpoint)]
    command += ["--recipe", str(recipe), "--out", str(tmp_path / "ddp"), "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)  # one report, from the main process
    assert report["lineage"]["world_size"] == 2 and not report["cached"]
    single = posttrain(rl_checkpoint, recipe, tmp_path / "home", progress=False)
    assert single.lineage["world_size"] == 1 and single.digest != report["lineage"]["candidate_digest"]

    base = heldout_margin(*load(rl_checkpoint))
    one, two = heldout_margin(*load(single.path)), heldout_margin(*load(tmp_path / "ddp"))
    assert one > base and two > base  # both learned the preference
    assert abs(two - one) < 0.01 * (one - base), (base, one, two)  # the same global batches, averaged: ~equal
    scores = [
        evaluate(path, [load_suite("capability")], tmp_path / "home")[0].scores
        for path in (single.path, tmp_path / "ddp")
    ]
    for task in ("shipyard_arithmetic_heldout", "shipyard_arithmetic_choice"):
        metric = "exact_match" if task.endswith("heldout") else "acc"
        assert abs(scores[0][task][metric] - scores[1][task][metric]) <= 0.01, scores  # measured: equal


def test_the_pipeline_launches_its_own_distributed_post_training_and_a_failed_rank_fails_it_with_the_log(
    rl_checkpoint: Path, tmp_path: Path
) -> None:
    """`pipeline.posttrain_processes: 2`: the pipeline runs `accelerate launch` itself (gloo peers on a CPU)."""
    import psutil

    from shipyard.checkpoints import Checkpoint
    from shipyard.errors import TrainingError
    from shipyard.orchestration.pipeline import make_candidate
    from shipyard.settings import Settings

    taken = Checkpoint("file:///run", "run", 10, "transformers", "file:///run/checkpoint-10", "complete")
    taken = Checkpoint(**(taken.as_dict() | {"path": str(rl_checkpoint)}))
    recipe = preference_recipe(tmp_path, ", max_steps: 4")
    settings = Settings(home=tmp_path / "home", pipeline={"recipe": recipe, "posttrain_processes": 2})
    made = make_candidate(taken, settings)
    lineage = json.loads((made / "lineage.json").read_text())
    assert lineage["world_size"] == 2 and made.parent == tmp_path / "home" / "candidates"
    [kept] = (tmp_path / "home" / "posttrain-logs").glob("*.log")  # the ranks' log lines, kept in the home
    assert kept.read_text().strip()

    (tmp_path / "odd").mkdir()
    odd = preference_recipe(tmp_path / "odd", ", batch_size: 3")  # does not split over 2 ranks
    before = {c.pid for c in psutil.Process().children(recursive=True)}  # other tests' servers, if any
    with pytest.raises(TrainingError, match=r"across 2 processes failed \(exit \d+\)") as failed:
        make_candidate(taken, Settings(home=tmp_path / "home", pipeline={"recipe": odd, "posttrain_processes": 2}))
    assert "batch_size 3 does not split over 2 processes" in str(failed.value)  # the log's tail, in the error
    left = {c.pid for c in psutil.Process().children(recursive=True)} - before
    assert left == set(), left  # no rank left holding a device or the slot


def test_one_post_training_spans_two_machines_joined_through_the_shared_home(
    rl_checkpoint: Path, tmp_path: Path
) -> None:
    """The pods of an indexed Job, here two processes of this host: pod 1 waits for pod 0's launch in the shared
    home and joins it as machine rank 1; pod 0 runs the stage (the pipeline's own post-training, 1 process a
    machine), so one candidate is trained by 2 ranks on 2 machines."""
    import uuid

    from shipyard.posttraining import nodes

    recipe = preference_recipe(tmp_path, ", max_steps: 4")
    home, flow_run = tmp_path / "home", str(uuid.uuid4())
    pod = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "SHIPYARD_"))}
    pod |= {"SHIPYARD_HOME": str(home), "PREFECT__FLOW_RUN_ID": flow_run, "TQDM_DISABLE": "1"}
    wrapper = [sys.executable, "-m", "shipyard.posttraining.nodes", "--nodes=2", "--wait-seconds=600"]
    stage = f"""
import json
from pathlib import Path
from shipyard.checkpoints import Checkpoint
from shipyard.orchestration.pipeline import make_candidate
from shipyard.settings import Settings
uri = "file:///run/checkpoint-10"
taken = Checkpoint("file:///run", "run", 10, "transformers", uri, "complete", path={str(rl_checkpoint)!r})
made = make_candidate(taken, Settings(pipeline={{"recipe": {str(recipe)!r}, "posttrain_processes": 1}}))
print(json.dumps(json.loads((made / "lineage.json").read_text())))
"""
    joining = subprocess.Popen(
        wrapper, env=pod | {"JOB_COMPLETION_INDEX": "1"}, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        zero = pod | {"JOB_COMPLETION_INDEX": "0"}
        done = subprocess.run([*wrapper, "--", sys.executable, "-c", stage], env=zero, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        _, joined = joining.communicate(timeout=120)
    finally:
        joining.kill()
    assert joining.returncode == 0, joined[-3000:]
    assert "machine 1 of 2: joining" in joined
    lineage = json.loads(done.stdout.strip().splitlines()[-1])
    assert lineage["world_size"] == 2  # one process on each machine, one job
    assert not nodes.launch_file(home, flow_run).exists()  # machine 0 took its launch back


def test_a_machine_joins_only_this_attempts_launch_and_ends_when_the_stage_run_ends_without_one(
    tmp_path: Path,
) -> None:
    import time

    from shipyard.posttraining import nodes

    path = nodes.launch_file(tmp_path, "run")
    started = time.time()
    assert nodes.wait_for(path, lambda: "COMPLETED", started, 5, poll=0.05) == "COMPLETED"  # cached: nothing to join
    assert nodes.wait_for(path, lambda: None, started, 0.2, poll=0.05) == "no launch within 0 s"
    launch = nodes.Launch(["-m", "shipyard.app.cli", "posttrain"], per_node=8, nodes=2, addr="10.0.0.7", port=29400)
    nodes.publish(launch, path)
    old = started - nodes.STALE_SECONDS - 60
    os.utime(path, (old, old))  # a crashed attempt's launch
    assert nodes.wait_for(path, lambda: "FAILED", started, 5, poll=0.05) == "FAILED"
    nodes.publish(launch, path)
    assert nodes.wait_for(path, lambda: "FAILED", started, 5, poll=0.05) == launch
    argv = launch.argv(rank=1)
    assert argv[argv.index("--num_processes") + 1] == "16" and argv[argv.index("--machine_rank") + 1] == "1"
    assert argv[argv.index("--main_process_ip") + 1] == "10.0.0.7" and argv[-3:] == launch.job
