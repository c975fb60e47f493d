"""The post-training command: a checkpoint through a recipe's stages into a release candidate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from shipyard.app.cli.common import ConfigOption, JsonOption, clear_errors, format_metric, print_json
from shipyard.settings import load_settings


@clear_errors
def posttrain_command(
    checkpoint: Annotated[Path, typer.Option(help="The checkpoint: a save_pretrained directory (e.g. a snapshot).")],
    out: Annotated[
        Path | None, typer.Option(help="Directory to write the candidate into (default: its cache entry in the home).")
    ] = None,
    recipe: Annotated[
        Path | None, typer.Option(help="Recipe YAML (default: pipeline.recipe; the demo's under profile: demo).")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Post-train a checkpoint with a recipe's stages into a release candidate (cached by digests)."""
    from shipyard.posttraining.posttrain import launched, posttrain
    from shipyard.profiles import choice

    settings = load_settings(config)
    recipe_file = choice(settings, "recipe", recipe)
    candidate = posttrain(checkpoint, recipe_file, settings.home, out, progress=True)
    if not launched().is_main_process:
        return  # one report per launch, from its main process
    if as_json:
        print_json({"path": str(candidate.path), "cached": candidate.cached, "lineage": candidate.lineage})
        return
    table = Table("stage", "method", "steps", "loss", "reward acc", "reward margin", title=str(candidate.path))
    for stage in candidate.lineage["stages"]:
        metrics = [format_metric(stage, key) for key in ("loss", "reward_accuracy", "reward_margin")]
        table.add_row(stage["name"], stage["method"], str(int(stage["steps"])), *metrics)
    Console().print(table)
    status = "cache hit, nothing trained" if candidate.cached else "trained"
    Console().print(f"candidate {candidate.digest[:12]} ({status})")
