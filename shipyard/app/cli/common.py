"""What every `shipyard` command shares: the error door, JSON output, common options and formatting."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape

from shipyard.errors import ShipyardError
from shipyard.progress import JSON_LINES

err = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Settings YAML (default: ./shipyard.yaml if present).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class Debug:
    """`shipyard --debug …` (or SHIPYARD_DEBUG=1): errors keep their traceback."""

    on = bool(os.environ.get("SHIPYARD_DEBUG"))


def clear_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Any error ends the command with one line on stderr and exit status 2 (`--json`: also as JSON on stdout).

    A `ShipyardError` says what is wrong; anything else names its type, as a bug or an environment problem.
    Exit status 1 stays free for a command's own "no" (a gate that ran and failed, a ledger with problems).
    """

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        json_lines = JSON_LINES.set(bool(kwargs.get("as_json")))  # a --json command's progress: JSON on stderr
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:
            fail(exc, bool(kwargs.get("as_json")))
            raise typer.Exit(2) from None
        finally:
            JSON_LINES.reset(json_lines)  # in-process callers (tests, notebooks) get their mode back

    return wrapper


def fail(exc: BaseException, as_json: bool) -> None:
    if Debug.on:
        traceback.print_exception(exc)
    if isinstance(exc, ShipyardError):
        shown = exc.as_dict()
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    else:
        shown = {"error": "internal", "type": type(exc).__name__, "message": str(exc)}
        hint = "" if Debug.on else "; shipyard --debug … shows the traceback"
        err.print(
            f"[bold red]error ({type(exc).__name__}):[/] {escape(str(exc))}{hint}", highlight=False, soft_wrap=True
        )
    if as_json:
        print_json(shown)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def format_metric(metrics: dict[str, Any], key: str) -> str:
    return f"{metrics[key]:.3f}" if key in metrics else "-"


StoreOption = Annotated[
    str | None, typer.Option("--store", help="Release store: path or s3://bucket/prefix (default: release.store).")
]
RefArgument = Annotated[
    str, typer.Argument(help="The release: a version (3 or v3) or a channel (stable, candidate).", show_default=False)
]
LineOption = Annotated[str | None, typer.Option("--line", help="Release line (default: release.line).")]
