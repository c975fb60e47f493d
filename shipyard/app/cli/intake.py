"""The intake commands: what the watcher sees in a run, and the caches' budgets."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.filesize import decimal
from rich.table import Table

from shipyard.app.cli.common import ConfigOption, JsonOption, clear_errors, format_metric, print_json
from shipyard.errors import ConfigError
from shipyard.settings import load_settings


@clear_errors
def checkpoints_command(
    source: Annotated[
        str | None,
        typer.Option(help="The run: a path, file://, s3://bucket/prefix or hf://org/name (default: watch.source)."),
    ] = None,
    validate: Annotated[
        bool, typer.Option(help="Also copy, hash and validate each complete checkpoint, as the watcher does.")
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show what the watcher sees in a run: each checkpoint's step, state, reason and metrics; nothing is copied.

    With --validate each complete checkpoint is snapshotted into the home and validated (digest, refusals).
    """
    from shipyard.intake.scan import scan
    from shipyard.intake.selection import load_state, view
    from shipyard.intake.sources import open_source

    settings = load_settings(config)
    source = source or settings.watch.source
    if source is None:
        raise ConfigError("no source: give --source or set watch.source")
    run = open_source(source, settings.s3, settings.hub, settings.home)
    state = load_state(settings.home / "watch", run.uri)
    pickles = settings.watch.allow_pickle_weights
    scanned = scan(run, settings.home, pickles, skip=state.decided.keys(), validate=validate, convert=settings.convert)
    seen = view(scanned, state)
    if as_json:
        print_json([c.as_dict() for c in seen])
        return
    if not seen:
        Console(stderr=True).print(
            f"{run.uri}: no checkpoint found (nothing in a layout Shipyard knows: checkpoint-N/, global_step_N/, "
            "step_N/, iter_N/, …); check the path, or wait for the run's first save",
            highlight=False,
            soft_wrap=True,
        )
        return
    caption = None if validate else "listed only: nothing copied or checked (--validate does both)"
    table = Table("step", "state", "reason", "digest", "reward", "held-out acc", "uri", title=source, caption=caption)
    for c in seen:
        reward, acc = format_metric(c.metrics, "reward"), format_metric(c.metrics, "heldout_accuracy")
        table.add_row(str(c.step), c.state, c.reason, c.digest[:12], reward, acc, c.uri)
    Console().print(table)


@clear_errors
def gc_command(
    dry_run: Annotated[bool, typer.Option(help="Show what would be evicted; delete nothing.")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Keep each cache under the home within its budget (cache.*): evict, least recently used first, what no
    in-flight checkpoint needs. Every watch poll does the same."""
    import time

    from shipyard.intake.selection import keep_within_budgets

    settings = load_settings(config)
    usages = keep_within_budgets(settings, time.time(), dry_run)
    if as_json:
        print_json([u.as_dict() for u in usages])
        return
    verb = "would evict" if dry_run else "evicted"
    table = Table("cache", "held", "budget", verb, "after", "pinned", title=str(settings.home))
    for u in usages:
        freed = f"{len(u.evicted)} ({decimal(u.before - u.after)})" if u.evicted else ""
        over = " [red](over)[/red]" if u.after > u.budget else ""
        row = (decimal(u.before), decimal(u.budget), freed, decimal(u.after) + over, str(u.pinned))
        table.add_row(u.cache, *row)
    Console().print(table)
