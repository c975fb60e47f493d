"""Progress off a terminal: plain lines at an interval, and the demo's heartbeat saying what is in hand."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import time
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress import MofNCompleteColumn, TextColumn

from shipyard.orchestration.heartbeat import Heartbeat
from shipyard.progress import PlainLinesProgress


def test_off_a_terminal_each_unfinished_task_is_a_plain_line_at_an_interval() -> None:
    out = io.StringIO()
    bar = PlainLinesProgress(
        TextColumn("{task.description}"), MofNCompleteColumn(), console=Console(file=out), every=0.1
    )
    with bar:
        task = bar.add_task("RL", total=10)
        bar.update(task, completed=3)
        time.sleep(0.35)
    lines = [line for line in out.getvalue().splitlines() if re.fullmatch(r"RL\s+3/10", line)]
    assert len(lines) >= 3, out.getvalue()  # at least two at the interval, and the last state at the end
    assert "\x1b[" not in out.getvalue() and "━" not in lines[0]


def test_the_heartbeat_says_the_stage_in_hand_and_the_runs_last_line(tmp_path: Path) -> None:
    said: list[str] = []
    log = tmp_path / "run.log"
    log.write_text("warm start 10/320\nRL  57/100  reward 0.41\n└──────┴────────┘\n\n")  # a table ends the log
    with Heartbeat(said.append, log, every=0.2) as heartbeat:
        heartbeat.trainer = subprocess.Popen(["sleep", "30"])
        logging.getLogger("shipyard.orchestration.pipeline").info("step %d: post-training", 40)
        time.sleep(1.5)
        heartbeat.trainer.kill()
        heartbeat.trainer.wait()
    assert any("RL run: RL  57/100  reward 0.41 · step 40: post-training (" in line for line in said), said
    assert logging.getLogger("shipyard.orchestration.pipeline").level == logging.NOTSET  # the logger is left as it was


def test_fates_are_said_at_once_and_a_release_is_handed_on_in_the_pipelines_thread(tmp_path: Path) -> None:
    said: list[str] = []
    handed: list[int] = []
    pipeline = logging.getLogger("shipyard.orchestration.pipeline")
    with Heartbeat(said.append, tmp_path / "run.log", every=60) as heartbeat:
        heartbeat.on_release = handed.append
        pipeline.info("step %d: screening", 20)
        pipeline.info("step %d: gate failed — %s", 20, "safety", extra={"fate": True})
        pipeline.info("step %d: released as v%d", 40, 1, extra={"fate": True, "released": 1})
        assert handed == [1] and heartbeat.stage == ""
    assert said == ["step 20: gate failed — safety", "step 40: released as v1"]


def test_a_failure_handing_on_a_release_is_raised_in_the_demos_thread(tmp_path: Path) -> None:
    def refuse(version: int) -> None:
        raise RuntimeError(f"v{version} refused")

    with Heartbeat(lambda _: None, tmp_path / "run.log", every=60) as heartbeat:
        heartbeat.on_release = refuse
        logging.getLogger("shipyard.orchestration.pipeline").info("released", extra={"fate": True, "released": 3})
        with pytest.raises(RuntimeError, match="v3 refused"):
            heartbeat.raise_failure()


def test_a_json_commands_progress_is_json_objects_on_stderr_and_stdout_stays_clean(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from shipyard.progress import JSON_LINES

    token = JSON_LINES.set(True)
    try:
        with PlainLinesProgress(TextColumn("{task.description}"), every=0.1) as bar:
            task = bar.add_task("upload", total=10)
            bar.update(task, completed=4)
            time.sleep(0.35)
    finally:
        JSON_LINES.reset(token)
    out, err = capsys.readouterr()
    shown = [json.loads(line) for line in err.splitlines()]
    assert out == "" and len(shown) >= 2
    assert {k: shown[0][k] for k in ("progress", "completed", "total")} == {
        "progress": "upload",
        "completed": 4,
        "total": 10,
    }
