"""The demo RL run: a tiny model learns two-digit addition on the CPU, checkpoint by checkpoint.

A short supervised warm start gets the model to answer some problems right
(RL with an exact-answer reward learns nothing from a model that never
succeeds), then TRL's `GRPOTrainer` trains it with the exact-answer and format
rewards of `shipyard.demo.arithmetic`. Checkpoints are the trainer's own
`checkpoint-<step>/` directories, rotated by `save_total_limit`; at each save
the held-out accuracy is scored greedily and logged beside the reward, KL and
completion length in `trainer_state.json`. Called by `shipyard demo-run`.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from rich.progress import MofNCompleteColumn, Progress, TextColumn
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PrinterCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
)
from transformers import TrainingArguments as HFTrainingArguments

from shipyard.demo import arithmetic
from shipyard.demo.errors import DemoRunError
from shipyard.demo.tiny import TinyModelSpec, build_model, build_tokenizer
from shipyard.intake.trainer_state import metrics_at, read_trainer_state
from shipyard.progress import progress_bar
from shipyard.quiet import quiet_libraries
from shipyard.settings import DemoSettings

CHECKPOINT_PREFIX = "checkpoint-"
WARM_START_DIR = "warm-start"
DCP_DIR = "dcp"
WARM_START_CHECK_EVERY = 20


@dataclass(frozen=True)
class CheckpointReport:
    """One checkpoint the run left on disk, with its metrics from `trainer_state.json`."""

    step: int
    path: Path
    metrics: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "path": str(self.path), **self.metrics}


def run_demo(settings: DemoSettings, progress: bool = True) -> list[CheckpointReport]:
    """Run the demo RL run into `settings.out` and report the checkpoints it left there."""
    _check_out_dir(settings.out)
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)  # the same floating-point sums on a machine with more cores
    try:
        _train(settings, progress)
    finally:
        torch.set_num_threads(threads)
    return list_checkpoints(settings.out)


def _train(settings: DemoSettings, progress: bool) -> None:
    # imported here: `import trl` costs seconds
    from trl.trainer.grpo_config import GRPOConfig
    from trl.trainer.grpo_trainer import GRPOTrainer

    quiet_libraries()
    torch.manual_seed(settings.seed)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, TinyModelSpec(seed=settings.seed))
    heldout = arithmetic.sample_problems(settings.heldout_size, seed=1, held_out=True)
    args = GRPOConfig(
        output_dir=str(settings.out),
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        gradient_checkpointing=False,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant",
        per_device_train_batch_size=settings.prompts_per_step * settings.generations,
        num_generations=settings.generations,
        max_completion_length=6,
        temperature=settings.temperature,
        beta=settings.beta,
        max_steps=settings.steps,
        logging_steps=1,
        save_steps=settings.save_every,
        save_total_limit=settings.keep,
        seed=settings.seed,
        report_to="none",
        disable_tqdm=True,
    )
    accuracy = TextColumn("reward {task.fields[reward]:.2f}  held-out acc {task.fields[accuracy]:.2f}")
    with progress_bar(progress, MofNCompleteColumn(), accuracy) as bar:
        warm_start(model, tokenizer, settings, bar)
        # GRPO starts from the warm start on disk, as a real run starts from an
        # SFT model; TRL loads its KL reference from that same path.
        start = settings.out / WARM_START_DIR
        model.save_pretrained(start)
        tokenizer.save_pretrained(start)
        trainer = GRPOTrainer(
            model=str(start),
            processing_class=tokenizer,
            reward_funcs=[arithmetic.trl_exact_reward, arithmetic.trl_format_reward],  # type: ignore[list-item]
            args=args,
            train_dataset=_rl_dataset(settings),
            callbacks=[HeldOutAccuracy(heldout, settings.save_every, bar)]
            + ([SaveAsDcp(settings.out / DCP_DIR)] if settings.format == "dcp" else []),
        )
        trainer.remove_callback(PrinterCallback)  # the bar shows progress; no dict per step on stdout
        trainer.train()


def warm_start(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, settings: DemoSettings, bar: Progress | None = None
) -> int:
    """Supervised training on the answer tokens only, until RL has something to work with; the steps taken.

    Accuracy jumps within a few dozen steps somewhere between ~200 and ~800
    steps, depending on the seed and the machine's floating point, so a fixed
    step count leaves some runs at 0.05 (RL then learns nothing from an
    exact-answer reward) and others at 0.9 (RL has nothing left to learn).
    Stopping once greedy accuracy on training problems reaches
    `warmup_target` (checked every `WARM_START_CHECK_EVERY` steps) starts RL
    from about the same place on every machine. Held-out problems are never
    looked at here.
    """
    nan = float("nan")
    task = bar.add_task("warm start", total=settings.warmup_steps, reward=nan, accuracy=nan) if bar else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.warmup_learning_rate)
    rng = random.Random(settings.seed)
    check = arithmetic.sample_problems(200, seed=settings.seed + 2)  # training split
    for step in range(1, settings.warmup_steps + 1):
        model.train()
        problems = arithmetic.sample_problems(64, seed=rng.getrandbits(32))
        input_ids, labels = _supervised_batch(tokenizer, problems)
        model(input_ids=input_ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        checking = step % WARM_START_CHECK_EVERY == 0
        reached = checking and arithmetic.accuracy(model, tokenizer, check) >= settings.warmup_target
        if bar is not None and task is not None:
            bar.update(task, completed=step, total=step if reached else settings.warmup_steps)
        if reached:
            return step
    return settings.warmup_steps


def _supervised_batch(
    tokenizer: PreTrainedTokenizerBase, problems: list[arithmetic.Problem]
) -> tuple[torch.Tensor, torch.Tensor]:
    rows, labels = [], []
    for problem in problems:
        prompt = tokenizer(arithmetic.prompt_text(tokenizer, problem), add_special_tokens=False)["input_ids"]
        full = tokenizer(arithmetic.prompt_text(tokenizer, problem, problem.answer), add_special_tokens=False)[
            "input_ids"
        ]
        rows.append(full)
        labels.append([-100] * len(prompt) + full[len(prompt) :])
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
    label_ids = torch.tensor([row + [-100] * (width - len(row)) for row in labels])
    return input_ids, label_ids


def _rl_dataset(settings: DemoSettings) -> Dataset:
    count = settings.steps * settings.prompts_per_step
    problems = arithmetic.sample_problems(count, seed=settings.seed + 1)
    return Dataset.from_list([{"prompt": p.messages(), "answer": p.answer} for p in problems])


class HeldOutAccuracy(TrainerCallback):
    """Scores held-out accuracy before each save, logs it as `eval_accuracy`, and drives the progress bar."""

    def __init__(self, problems: list[arithmetic.Problem], save_every: int, bar: Progress | None) -> None:
        self.problems = problems
        self.save_every = save_every
        self.bar = bar
        self.task: Any = None
        self.accuracy = float("nan")

    def on_train_begin(
        self, args: HFTrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.global_step == 0:  # the warm start's score: what RL is measured against
            self._score(state, kwargs)
        if self.bar is not None:
            self.task = self.bar.add_task("RL", total=state.max_steps, reward=float("nan"), accuracy=self.accuracy)

    def on_step_end(
        self, args: HFTrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # on_step_end runs before the trainer logs and saves this step, so the
        # accuracy lands in the trainer_state.json of the checkpoint it scores.
        if state.global_step % self.save_every == 0 or state.global_step == state.max_steps:
            self._score(state, kwargs)

    def _score(self, state: TrainerState, kwargs: dict[str, Any]) -> None:
        self.accuracy = arithmetic.accuracy(kwargs["model"], kwargs["processing_class"], self.problems)
        state.log_history.append({"eval_accuracy": self.accuracy, "step": state.global_step})

    def on_log(self, args: HFTrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        logs = kwargs.get("logs") or {}
        if self.bar is not None and "reward" in logs:
            self.bar.update(self.task, completed=state.global_step, reward=logs["reward"], accuracy=self.accuracy)


class SaveAsDcp(TrainerCallback):
    """After each save, the model's state dict again as a torch DCP checkpoint in `<out>/dcp/step-<n>/`: a
    training-format checkpoint (torchtitan's layout), whose `.metadata` is written last."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def on_save(self, args: HFTrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        from torch.distributed.checkpoint.state_dict_saver import save

        with warnings.catch_warnings():  # "assuming the intent is to save in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            save(kwargs["model"].state_dict(), checkpoint_id=self.directory / f"step-{state.global_step}", no_dist=True)


def list_checkpoints(out: Path) -> list[CheckpointReport]:
    """The complete checkpoints under `out`, by step, with their metrics."""
    reports = []
    for path in out.glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = path.name.removeprefix(CHECKPOINT_PREFIX)
        state_file = path / "trainer_state.json"
        if suffix.isdigit() and state_file.is_file():
            step = int(suffix)
            reports.append(CheckpointReport(step, path, metrics_at(read_trainer_state(state_file), step)))
    return sorted(reports, key=lambda r: r.step)


def _check_out_dir(out: Path) -> None:
    if out.exists() and any(out.glob(f"{CHECKPOINT_PREFIX}*")):
        raise DemoRunError(f"{out}: already holds checkpoints; give an empty or new --out directory")
    out.mkdir(parents=True, exist_ok=True)
