"""`shipyard demo` and `shipyard demo-run`, added to the command line through the `shipyard.commands` entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from shipyard.app.cli.common import ConfigOption, JsonOption, clear_errors, format_metric, print_json
from shipyard.errors import ConfigError
from shipyard.settings import load_settings


def register(app: typer.Typer) -> None:
    app.command("demo-run")(demo_run_command)
    app.command("demo")(demo_command)


@clear_errors
def demo_run_command(
    out: Annotated[Path | None, typer.Option(help="Directory for checkpoint-<step>/ (default: demo.out).")] = None,
    steps: Annotated[int | None, typer.Option(help="RL steps (default: demo.steps).")] = None,
    save_every: Annotated[int | None, typer.Option(help="Save every K steps (default: demo.save_every).")] = None,
    keep: Annotated[int | None, typer.Option(help="Keep only the newest M checkpoints (default: all).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default: demo.seed).")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the demo RL run on the CPU: a tiny model learns two-digit addition with GRPO."""
    from shipyard.demo.rl_run import run_demo  # imports torch and TRL: only when asked

    given = {"out": out, "steps": steps, "save_every": save_every, "keep": keep, "seed": seed}
    base = load_settings(config)
    demo = load_settings(config, demo=base.demo.model_dump() | {k: v for k, v in given.items() if v is not None}).demo
    reports = run_demo(demo, progress=True)
    if as_json:
        print_json([r.as_dict() for r in reports])
        return
    columns = ("step", "reward", "KL", "mean length", "held-out accuracy", "checkpoint")
    table = Table(*columns, title=f"checkpoints in {demo.out}")
    for r in reports:
        table.add_row(
            str(r.step),
            *(format_metric(r.metrics, k) for k in ("reward", "kl", "mean_length", "heldout_accuracy")),
            r.path.name,
        )
    Console().print(table)


@clear_errors
def demo_command(
    directory: Annotated[Path, typer.Option("--dir", help="Where the demo keeps everything.")] = Path("shipyard-demo"),
    fmt: Annotated[
        str, typer.Option("--format", help="hf, or dcp: the run saves torch DCP checkpoints, converted on intake.")
    ] = "hf",
    as_json: JsonOption = False,
) -> None:
    """The embedded default end to end: an RL run on the CPU, watched, post-trained, gated, released and approved."""
    from shipyard.demo import end_to_end as demo

    if fmt not in ("hf", "dcp"):
        raise ConfigError(f"--format {fmt!r}: expected hf or dcp")
    console = Console(quiet=as_json)
    report = demo.run(directory, lambda line: console.print(line, highlight=False, soft_wrap=True), fmt=fmt)
    summary = demo.summary(report)
    if as_json:
        print_json(summary)
        return
    for line in demo.describe(summary):
        console.print(line, highlight=False, soft_wrap=True)
