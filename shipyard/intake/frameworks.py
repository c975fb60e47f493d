"""Which framework wrote a run, and what its checkpoints need, from the layouts found in one listing.

Used by `shipyard init` to say what it found and which settings the run needs (a base model for checkpoints
that hold no `config.json`, a converter command for Megatron weights). Detection is by layout
(`shipyard.intake.layouts`), so it works alike on a local directory, an S3 prefix and a Hub repo.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import pairwise
from pathlib import PurePosixPath

from shipyard.intake.layouts import Found

NAMES = {
    "transformers": "TRL / HF Trainer",
    "verl": "veRL",
    "deepspeed": "DeepSpeed ZeRO",
    "nemo-rl": "NeMo-RL",
    "prime-rl": "prime-rl",
    "torchtitan": "torchtitan",
    "megatron": "slime / Megatron",
    "open-instruct": "open-instruct",
    "hub": "Hub revisions (a step per revision)",
    "marker": "save_pretrained directories with a COMPLETE marker",
}
HOW = {
    "hf": "Hugging Face weights, taken as they are",
    "dcp": "torch DCP shards, converted to a model exactly",
    "fsdp-ranks": "FSDP rank shards, converted to a model exactly",
    "zero": "DeepSpeed ZeRO shards, converted with zero_to_fp32",
    "command": "Megatron weights, converted by convert.command",
}


@dataclass(frozen=True)
class Detected:
    """What one listing of a run says about it."""

    framework: str  # a display name; "" when no checkpoint was found
    steps: list[int]
    complete: int
    formats: list[str]  # how the checkpoints are read (keys of HOW)
    interval: int | None  # the most common gap between saved steps
    without_config: int  # checkpoints that hold no config.json: they need the run's or a base model's
    needs_command: bool  # Megatron weights: convert.command must be set

    def lines(self) -> list[str]:
        if not self.framework:
            return ["no checkpoint found yet"]
        every = f", one every {self.interval} steps" if self.interval else ""
        out = [f"{self.framework}: {len(self.steps)} checkpoint(s), {self.complete} complete{every}"]
        out += [f"  {HOW[f]}" for f in self.formats]
        return out


def detect(found: list[Found]) -> Detected:
    """The framework most of `found` comes from, the saved steps, how they are read and what they lack."""
    if not found:
        return Detected("", [], 0, [], None, 0, False)
    layout = Counter(f.layout for f in found).most_common(1)[0][0]
    name = NAMES.get(layout, layout)
    if layout == "deepspeed" and any(_openrlhf(f.path) for f in found):
        name = "OpenRLHF (DeepSpeed)"
    if layout == "transformers" and any(f.format == "dcp" for f in found):
        name += " under FSDP (SHARDED_STATE_DICT)"
    steps = sorted({f.step for f in found})
    gaps = Counter(b - a for a, b in pairwise(steps))
    return Detected(
        framework=name,
        steps=steps,
        complete=sum(f.complete for f in found),
        formats=sorted({f.format for f in found}, key=list(HOW).index),
        interval=gaps.most_common(1)[0][0] if gaps else None,
        without_config=sum(f.format not in ("hf", "command") and not f.hf_files for f in found),
        needs_command=any(f.format == "command" for f in found),
    )


def _openrlhf(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return "_actor" in parts or parts[-1].endswith("_hf")
