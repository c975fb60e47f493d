"""What every `shipyard` command shares: the error door, JSON output, common options and formatting."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from shipyard.errors import ShipyardError

err = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Settings YAML (default: ./shipyard.yaml if present).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def clear_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Print a `ShipyardError` as one message and exit 2, instead of a traceback."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ShipyardError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def format_metric(metrics: dict[str, Any], key: str) -> str:
    return f"{metrics[key]:.3f}" if key in metrics else "-"


StoreOption = Annotated[
    str | None, typer.Option("--store", help="Release store: path or s3://bucket/prefix (default: release.store).")
]
LineOption = Annotated[str | None, typer.Option("--line", help="Release line (default: release.line).")]
