"""What `shipyard demo` says while it works: each checkpoint's fate as it is recorded, and a heartbeat.

The pipeline logs one INFO line as each stage of a checkpoint starts and one
when its fate is recorded (`extra={"fate": True}`, with `released` for a new
version); this handler on the `shipyard.orchestration.pipeline` logger says the fates at
once and, whenever nothing was said for `every` seconds, what is in hand: the
stage, and while the RL run trains, the last progress line of its log. Plain
lines, so a log or a pipe gets them too. Used by `shipyard.demo.end_to_end`.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

PIPELINE_LOGGER = "shipyard.orchestration.pipeline"


class Heartbeat(logging.Handler):
    """Says each fate the pipeline records, and what is in hand whenever nothing was said for `every` seconds."""

    def __init__(self, say: Callable[[str], None], run_log: Path = Path("run.log"), every: float = 10.0) -> None:
        super().__init__(logging.INFO)
        self._say, self.run_log, self.every = say, run_log, every
        self.trainer: subprocess.Popen[bytes] | None = None
        self.on_release: Callable[[int], None] | None = None
        self._failure: Exception | None = None
        self.started = self.last = time.monotonic()
        self.stage, self.stage_since = "", self.started
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="demo-heartbeat", daemon=True)
        self._logger = logging.getLogger(PIPELINE_LOGGER)
        self._level = self._logger.level

    def __enter__(self) -> Heartbeat:
        self._logger.addHandler(self)
        self._logger.setLevel(logging.INFO)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopped.set()
        self._thread.join()
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)

    def emit(self, record: logging.LogRecord) -> None:
        """Runs in the pipeline's thread: a fate is said (and a release handed on) before the next stage starts."""
        if not getattr(record, "fate", False):
            self.doing(record.getMessage())
            return
        self.doing("")
        self.say(record.getMessage())
        version = getattr(record, "released", None)
        if version is not None and self.on_release is not None:
            try:
                self.on_release(version)
            except Exception as exc:  # logging would swallow it: kept for the demo's own thread
                self._failure = self._failure or exc

    def raise_failure(self) -> None:
        """Raise what `on_release` raised inside the pipeline, if anything."""
        if self._failure is not None:
            raise self._failure

    def doing(self, stage: str) -> None:
        self.stage, self.stage_since = stage, time.monotonic()

    def say(self, line: str) -> None:
        self.last = time.monotonic()
        self._say(line)

    def status(self) -> str:
        now = time.monotonic()
        parts = []
        if self.trainer is not None and self.trainer.poll() is None:
            parts.append(f"RL run: {_last_line(self.run_log) or 'starting'}")
        if self.stage:
            parts.append(f"{self.stage} ({now - self.stage_since:.0f} s)")
        elif self.trainer is not None and self.trainer.poll() is None:
            parts.append("waiting for the next checkpoint")
        else:
            parts.append("reading the run")
        elapsed = int(now - self.started)
        return f"  [{elapsed // 60}:{elapsed % 60:02d}] " + " · ".join(parts)

    def _beat(self) -> None:
        while not self._stopped.wait(1.0):
            if time.monotonic() - self.last >= self.every:
                self.say(self.status())


def _last_line(log: Path) -> str:
    """The last line of a log with words in it (not a table's border), reading only its tail."""
    if not log.is_file():
        return ""
    with log.open("rb") as f:
        f.seek(max(0, log.stat().st_size - 4096))
        lines = f.read().decode("utf-8", "replace").splitlines()
    return next((line.strip() for line in reversed(lines) if any(c.isalnum() for c in line)), "")
