"""One way to show progress: a rich bar with a description, the given columns and elapsed time, or nothing."""

from __future__ import annotations

from contextlib import nullcontext

from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn


def progress_bar(enabled: bool, *columns: ProgressColumn) -> Progress | nullcontext[None]:
    """A bar showing `columns` between the task's description and its elapsed time; a no-op when disabled."""
    if not enabled:
        return nullcontext()
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), *columns, TimeElapsedColumn())
