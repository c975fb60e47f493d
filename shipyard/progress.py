"""One way to show progress: a rich bar on a terminal, plain lines elsewhere, or nothing.

On a terminal the bar redraws in place. When the output is a file or a pipe
(CI, `make demo > log`, a child process writing a log) rich draws nothing
until the end, so every unfinished task is then printed as one plain line
every `PLAIN_EVERY` seconds instead: a person tailing the log sees the work
move. A command run with `--json` keeps stdout for its JSON result: its
progress goes to stderr as one JSON object per unfinished task at the same
interval (`JSON_LINES`, set for the command by `shipyard.app.cli.common.clear_errors`).
Used by the demo RL run, post-training and uploads.
"""

from __future__ import annotations

import json
import threading
from contextlib import nullcontext
from contextvars import ContextVar
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

PLAIN_EVERY = 10.0
JSON_LINES: ContextVar[bool] = ContextVar("shipyard_progress_json", default=False)


class PlainLinesProgress(Progress):
    """rich's `Progress` that, off a terminal, prints each unfinished task as a plain line every `every` seconds."""

    def __init__(self, *columns: ProgressColumn | str, every: float = PLAIN_EVERY, **kwargs: Any) -> None:
        self.json_lines = JSON_LINES.get()
        if self.json_lines:
            kwargs |= {"console": Console(stderr=True), "disable": True}  # no bar: objects on stderr
        super().__init__(*columns, **kwargs)
        self.every = every
        self._stopped = threading.Event()
        self._ticker: threading.Thread | None = None

    def start(self) -> None:
        super().start()
        if (self.json_lines or not self.console.is_terminal) and self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="plain-progress", daemon=True)
            self._ticker.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        super().stop()

    def plain_lines(self) -> list[str]:
        """One line per unfinished task: its columns as text, the bar left out."""
        columns = [c for c in self.columns if not isinstance(c, BarColumn)]
        lines = []
        for task in self.tasks:
            if task.visible and not task.finished:
                parts = [c.format(task=task) if isinstance(c, str) else c(task) for c in columns]
                lines.append("  ".join(p.plain if isinstance(p, Text) else str(p) for p in parts))
        return lines

    def json_lines_now(self) -> list[str]:
        """One JSON object per unfinished task: its description, completed, total and elapsed seconds."""
        return [
            json.dumps({"progress": t.description, "completed": t.completed, "total": t.total, "elapsed": t.elapsed})
            for t in self.tasks
            if t.visible and not t.finished
        ]

    def _tick(self) -> None:
        while not self._stopped.wait(self.every):
            lines = self.json_lines_now() if self.json_lines else self.plain_lines()
            for line in lines:
                self.console.print(line, markup=False, highlight=False, soft_wrap=True)


def progress_bar(enabled: bool, *columns: ProgressColumn) -> Progress | nullcontext[None]:
    """A bar showing `columns` between the task's description and its elapsed time; a no-op when disabled."""
    if not enabled:
        return nullcontext()
    return PlainLinesProgress(TextColumn("[bold]{task.description}"), BarColumn(), *columns, TimeElapsedColumn())
