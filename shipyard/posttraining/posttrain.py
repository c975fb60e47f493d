"""Post-training a checkpoint into a release candidate: the recipe's stages, then one merged model.

Each stage trains the previous stage's model with TRL (`DPOTrainer` or
`SFTTrainer`), full or LoRA (PEFT; adapters merged afterwards, so every
candidate is a plain model). DPO without LoRA precomputes the reference
log-probs from the model in memory: otherwise TRL would silently reload the
reference from `config._name_or_path`, the on-disk weights. Precision and
gradient checkpointing follow the device (TRL's defaults assume a GPU).

A candidate is cached under `home/candidates/<key>/`, the key a digest of the
checkpoint's files, the recipe, the data and the library versions — not of
paths — so a second call with the same inputs trains nothing. Its
`lineage.json` records all of that plus each stage's final metrics and the
candidate digest. Called by `shipyard posttrain` and the release flow.

Under `accelerate launch` every process trains (DDP; FSDP or DeepSpeed from the
recipe's `fsdp`/`deepspeed` settings), a stage's `batch_size` is the global
batch split over the processes, the world size is part of the key and the
lineage, and the main process writes the candidate.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from rich.progress import MofNCompleteColumn, Progress, TaskID, TextColumn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    TrainerControl,
    TrainerState,
)
from transformers import TrainingArguments as HFTrainingArguments
from transformers.trainer_callback import PrinterCallback

from shipyard.caches import touch, working
from shipyard.digests import checkpoint_digest, directory_digest, file_digests
from shipyard.errors import ConfigError
from shipyard.hardware import device
from shipyard.model_dir import require_model_dir
from shipyard.posttraining.data import StageData, load_stage_data
from shipyard.posttraining.recipe import Recipe, Stage, load_recipe, recipe_digest, sharding
from shipyard.progress import progress_bar
from shipyard.quiet import quiet_libraries

SCHEMA_VERSION = 1
LINEAGE = "lineage.json"
LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "shipyard")


@dataclass(frozen=True)
class Candidate:
    path: Path  # the candidate's directory (the cache entry, or `out` when given)
    digest: str
    cached: bool  # True when no training ran
    lineage: dict[str, Any]


def posttrain(
    checkpoint: Path, recipe_file: Path, home: Path, out: Path | None = None, progress: bool = True
) -> Candidate:
    """Post-train `checkpoint` with the recipe in `recipe_file`; reuse the cached candidate when inputs match."""
    quiet_libraries()
    recipe = load_recipe(recipe_file)
    require_model_dir(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    data = [load_stage_data(recipe_file, stage, tokenizer) for stage in recipe.stages]
    processes = launched()
    if processes.num_processes > 1:
        data = [_on_disk(d, home / "candidates" / ".datasets", processes) for d in data]
    inputs = _inputs(checkpoint, recipe, recipe_file, data) | {"world_size": processes.num_processes}
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    entry = home / "candidates" / key
    cached = (entry / LINEAGE).is_file()
    if cached:
        touch(entry)
    else:
        main = processes.is_main_process
        lineage = inputs | {"key": key, "sharding": sharding(recipe, recipe_file)}
        _build(checkpoint, tokenizer, recipe, data, lineage, entry, progress and main, main)
        processes.wait_for_everyone()  # the main process has written the candidate
    lineage = json.loads((entry / LINEAGE).read_text())
    if out is not None and processes.is_main_process:
        _materialize(entry, out, key)
    return Candidate(out or entry, lineage["candidate_digest"], cached, lineage)


def launched() -> PartialState:
    """The processes of this launch (`accelerate launch`, `torchrun`: DDP, FSDP, DeepSpeed), else just this one.

    Built as the Trainer builds it (the state is shared, the first one built wins): on a CPU it takes the
    launcher's processes as gloo peers, which the Trainer would otherwise do."""
    return PartialState(cpu=device() == "cpu")


def _on_disk(data: StageData, directory: Path, processes: PartialState) -> StageData:
    """The stage's rows in one arrow file all processes share: TRL caches per-dataset results (the reference
    log-probs) beside a dataset's file, written by the main process for all, and an in-memory dataset's cache
    is a directory of each process's own."""
    directory.mkdir(parents=True, exist_ok=True)
    with processes.main_process_first():
        shared = data.dataset.flatten_indices(cache_file_name=str(directory / f"{data.digest}.arrow"))
    return StageData(shared, data.digest, data.origin)


def _inputs(checkpoint: Path, recipe: Recipe, recipe_file: Path, data: list[StageData]) -> dict[str, Any]:
    """What determines the candidate: digests and versions (paths are recorded, not keyed; a DeepSpeed config
    file counts by its content)."""
    inputs = {
        "schema_version": SCHEMA_VERSION,
        "checkpoint_digest": directory_digest(checkpoint),
        "recipe_digest": recipe_digest(recipe),
        "data_digests": {stage.name: d.digest for stage, d in zip(recipe.stages, data, strict=True)},
        "versions": {name: version(name) for name in LIBRARIES},
        "device": device(),
    }
    deepspeed = sharding(recipe, recipe_file).get("deepspeed")
    if isinstance(deepspeed, str):
        inputs["deepspeed_digest"] = hashlib.sha256(Path(deepspeed).read_bytes()).hexdigest()
    return inputs


def _build(
    checkpoint: Path,
    tokenizer: PreTrainedTokenizerBase,
    recipe: Recipe,
    data: list[StageData],
    lineage: dict[str, Any],
    entry: Path,
    progress: bool,
    main: bool = True,
) -> None:
    """Train every stage (in each process of a launch); the main process writes the candidate."""
    dtype = torch.float32 if device() == "cpu" else "auto"
    model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype)
    entry.parent.mkdir(parents=True, exist_ok=True)
    stages = []
    with (
        working(entry.parent) as work,
        progress_bar(progress, MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}")) as bar,
    ):
        for stage, stage_data in zip(recipe.stages, data, strict=True):
            work_dir = Path(work) / stage.name
            model, metrics = train_stage(model, tokenizer, stage, stage_data, work_dir, bar, lineage["sharding"])
            stages.append({"name": stage.name, "method": stage.method, "rows": len(stage_data.dataset), **metrics})
        if not main:
            return
        building = Path(work) / "candidate"
        model.save_pretrained(building)
        tokenizer.save_pretrained(building)
        paths = sorted(building.iterdir())
        files = dict(zip((p.name for p in paths), file_digests(paths), strict=True))
        lineage |= {
            "checkpoint": str(checkpoint.resolve()),
            "data": [d.origin for d in data],
            "recipe": recipe.model_dump(mode="json"),
            "stages": stages,
            "files": files,
            "candidate_digest": checkpoint_digest(files),
        }
        (building / LINEAGE).write_text(json.dumps(lineage, indent=1, sort_keys=True) + "\n")
        try:
            os.rename(building, entry)
        except OSError:  # another process built the same candidate first
            if not (entry / LINEAGE).is_file():
                raise


def train_stage(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    stage: Stage,
    data: StageData,
    work: Path,
    bar: Progress | None = None,
    sharded: dict[str, Any] | None = None,
) -> tuple[PreTrainedModel, dict[str, float]]:
    """Train `model` for one stage; return the (merged) model and the stage's final metrics."""
    from peft import LoraConfig, PeftModel
    from trl.trainer.dpo_config import DPOConfig
    from trl.trainer.dpo_trainer import DPOTrainer
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    on, processes = device(), launched().num_processes
    if stage.batch_size % processes:
        raise ConfigError(
            f"stage {stage.name}: batch_size {stage.batch_size} does not split over {processes} processes"
        )
    common: dict[str, Any] = {
        "output_dir": str(work),
        "per_device_train_batch_size": stage.batch_size // processes,  # the recipe's batch is the global batch
        "learning_rate": stage.learning_rate,
        "max_steps": stage.max_steps or -1,
        "num_train_epochs": stage.epochs or 1.0,
        "max_length": stage.max_length,
        "seed": stage.seed,
        "data_seed": stage.seed,
        "use_cpu": on == "cpu",
        "bf16": on == "cuda" and torch.cuda.is_bf16_supported(),
        "gradient_checkpointing": on == "cuda",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        **(sharded or {}),  # the recipe's fsdp / deepspeed
    }
    lora = stage.lora
    peft_config = (
        LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules)
        if lora
        else None
    )
    callbacks: list[TrainerCallback] = [StageProgress(stage.name, bar)]
    trainer: DPOTrainer | SFTTrainer
    if stage.method == "dpo":
        args = DPOConfig(
            **common,
            beta=stage.beta,
            loss_type=stage.loss_type,
            loss_weights=stage.loss_weights,
            # With LoRA the reference is the base with adapters off; without, precompute it from this model.
            precompute_ref_log_probs=peft_config is None,
        )
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=data.dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    else:
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**common),
            train_dataset=data.dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    trained = trainer.model
    if isinstance(trained, PeftModel):
        trained = trained.merge_and_unload()
    assert isinstance(trained, PreTrainedModel)
    return trained, final_metrics(trainer.state.log_history)


def final_metrics(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """The stage's last logged loss (and DPO reward accuracy and margin), its mean loss and step count."""
    steps = [entry for entry in log_history if "loss" in entry]
    summary = next((entry for entry in log_history if "train_loss" in entry), {})
    last = steps[-1] if steps else {}
    names = {"loss": "loss", "rewards/accuracies": "reward_accuracy", "rewards/margins": "reward_margin"}
    metrics = {ours: float(last[theirs]) for theirs, ours in names.items() if theirs in last}
    metrics["train_loss"] = float(summary.get("train_loss", float("nan")))
    metrics["steps"] = float(last.get("step", 0))
    return metrics


class StageProgress(TrainerCallback):
    """A progress bar per stage with step and loss."""

    def __init__(self, name: str, bar: Progress | None) -> None:
        self.name, self.bar = name, bar
        self.task: TaskID | None = None

    def on_train_begin(self, args: HFTrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        if self.bar is not None:
            self.task = self.bar.add_task(self.name, total=state.max_steps, loss=float("nan"))

    def on_log(self, args: HFTrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        logs = kwargs.get("logs") or {}
        if self.bar is not None and self.task is not None and "loss" in logs:
            self.bar.update(self.task, completed=state.global_step, loss=logs["loss"])


def _materialize(entry: Path, out: Path, key: str) -> None:
    """Make `out` hold the cached candidate (hard links where possible)."""
    existing = out / LINEAGE
    if existing.is_file() and json.loads(existing.read_text()).get("key") == key:
        return
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: holds something else than this candidate; give an empty or new --out directory")
    out.mkdir(parents=True, exist_ok=True)
    for path in entry.iterdir():
        try:
            os.link(path, out / path.name)
        except OSError:
            shutil.copyfile(path, out / path.name)
