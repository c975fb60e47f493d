"""Post-training recipes: an ordered list of stages as YAML data with a schema.

A stage names its method (DPO through TRL's `DPOTrainer`, SFT through
`SFTTrainer`), its data set (a local JSONL path, resolved relative to the
recipe file, or a `datasets` id), its hyper-parameters, and full fine-tuning
or LoRA. `load_recipe` parses and checks a recipe file; its digest covers the
parsed content, not the file's path. Called by `shipyard.posttraining.posttrain`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shipyard.errors import ConfigError
from shipyard.schema import load_yaml


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSpec(Strict):
    """Train a LoRA adapter (PEFT) instead of all weights; merged into the weights afterwards."""

    r: int = Field(8, ge=1, description="Adapter rank.")
    alpha: int = Field(16, ge=1, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | str = Field("all-linear", description="Modules to adapt, as PEFT names them.")


class Stage(Strict):
    """One post-training stage."""

    name: str = Field(description="Shown in progress and lineage, e.g. 'preference' or 'safety'.")
    method: Literal["dpo", "sft"] = Field(description="dpo: TRL DPOTrainer; sft: TRL SFTTrainer.")
    dataset: str | list[str] = Field(
        description="A .jsonl path (relative to the recipe file) or a `datasets` id; a list is concatenated."
    )
    split: str = Field("train", description="Split of a `datasets` id.")
    loss_type: list[str] = Field(["sigmoid"], description="DPO loss types (TRL names), combined by loss_weights.")
    loss_weights: list[float] | None = Field(None, description="Weights of the DPO loss types; None: all 1.")
    beta: float = Field(0.1, gt=0, description="DPO temperature: how far from the reference the policy may move.")
    learning_rate: float = Field(5e-6, gt=0, description="Peak learning rate.")
    epochs: float | None = Field(None, gt=0, description="Passes over the data; give this or max_steps.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; give this or epochs.")
    batch_size: int = Field(
        8, ge=1, description="Examples per optimizer step across all processes (the global batch, split evenly)."
    )
    max_length: int = Field(512, ge=8, description="Longest tokenized example; longer ones are truncated.")
    seed: int = Field(0, description="Seed for initialization of adapters, data order and dropout.")
    lora: LoraSpec | None = Field(None, description="Train LoRA adapters instead of all weights.")

    @model_validator(mode="after")
    def _one_length(self) -> Stage:
        if (self.epochs is None) == (self.max_steps is None):
            raise ValueError(
                f"give exactly one of epochs and max_steps; got epochs={self.epochs}, max_steps={self.max_steps}"
            )
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(f"loss_weights needs one weight per loss_type {self.loss_type}; got {self.loss_weights}")
        return self


class Recipe(Strict):
    """Post-training as data: stages run in order, each on the previous stage's model."""

    stages: list[Stage] = Field(min_length=1, description="Stages in order, e.g. preference then safety.")
    fsdp: str | None = Field(
        None,
        description="FSDP for every stage under `accelerate launch`, as transformers' TrainingArguments.fsdp, "
        "e.g. 'full_shard auto_wrap'.",
    )
    fsdp_config: dict[str, Any] | None = Field(
        None, description="TrainingArguments.fsdp_config, e.g. {fsdp_version: 2, transformer_layer_cls_to_wrap: [...]}."
    )
    deepspeed: str | dict[str, Any] | None = Field(
        None, description="A DeepSpeed config (a JSON file relative to the recipe, or inline), as TrainingArguments."
    )

    @model_validator(mode="after")
    def _one_sharding(self) -> Recipe:
        if self.fsdp and self.deepspeed:
            raise ValueError("fsdp and deepspeed: choose one")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> Recipe:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique; got {names}")
        return self


def load_recipe(path: Path) -> Recipe:
    """The recipe in `path`, checked; a `ConfigError` names the file and every problem."""
    return load_yaml(path, Recipe)


def sharding(recipe: Recipe, recipe_file: Path) -> dict[str, Any]:
    """The recipe's FSDP or DeepSpeed settings as TrainingArguments keywords (a DeepSpeed file made absolute)."""
    if recipe.fsdp:
        return {"fsdp": recipe.fsdp, **({"fsdp_config": recipe.fsdp_config} if recipe.fsdp_config else {})}
    if isinstance(recipe.deepspeed, str):
        path = (recipe_file.parent / recipe.deepspeed).resolve()
        if not path.is_file():
            raise ConfigError(f"{recipe_file}: deepspeed config {recipe.deepspeed} not found (looked at {path})")
        return {"deepspeed": str(path)}
    return {"deepspeed": recipe.deepspeed} if recipe.deepspeed else {}


def recipe_digest(recipe: Recipe) -> str:
    return hashlib.sha256(json.dumps(recipe.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def local_dataset(recipe_file: Path, stage: Stage, dataset: str) -> Path | None:
    """`dataset` as a local JSONL file (relative to the recipe file), or None if it is a `datasets` id."""
    if not dataset.endswith((".jsonl", ".json")):
        return None
    path = (recipe_file.parent / dataset).resolve()
    if not path.is_file():
        raise ConfigError(f"{recipe_file}: stage '{stage.name}': dataset {dataset} not found (looked at {path})")
    return path
