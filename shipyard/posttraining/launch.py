"""Post-training as a distributed job: `accelerate launch` over N processes, run and watched as a child group.

`pipeline.posttrain_processes` (1: in the calling process; `auto`: one per visible accelerator) decides, per
machine; a stage run in a multi-node Job (`shipyard.posttraining.nodes`) launches machine 0 of them. The
job is `shipyard posttrain` under `accelerate launch --multi_gpu` (torchrun underneath: one process per GPU,
gloo peers on a CPU), so the recipe's FSDP or DeepSpeed settings apply as they do under a person's own
launch. Its log lines reach the caller's logger and a log file in the home; a rank that fails ends the job
(torchrun stops the others) and the stage fails with the log's tail; if the caller is cancelled or crashes
out of `run`, the whole process group is killed, so nothing keeps holding a GPU or the training slot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
from collections import deque
from pathlib import Path
from typing import Any, Literal

from shipyard.errors import ConfigError, TrainingError
from shipyard.posttraining import nodes

log = logging.getLogger(__name__)
TAIL_LINES = 40


def processes(setting: int | Literal["auto"]) -> int:
    """How many processes post-train: the setting, or with `auto` one per visible accelerator (at least one)."""
    if setting != "auto":
        return setting
    import torch

    return max(1, torch.cuda.device_count())


def job(checkpoint: Path, recipe: Path, out: Path | None, config: Path | None) -> list[str]:
    """`shipyard posttrain` as python arguments, for `accelerate launch`."""
    argv = ["-m", "shipyard.app.cli", "posttrain", "--checkpoint", str(checkpoint), "--recipe", str(recipe), "--json"]
    argv += ["--out", str(out)] if out else []
    return argv + (["--config", str(config)] if config else [])


def launches(setting: int | Literal["auto"]) -> bool:
    """Whether post-training runs as a launched job: more than one process here, or a job across machines."""
    return processes(setting) > 1 or nodes.this_job()[0] > 1


def run(
    n: int, checkpoint: Path, recipe: Path, home: Path, config: Path | None = None, out: Path | None = None
) -> dict[str, Any]:
    """Post-train across `n` processes (on each machine of the job); the main process's report (path, cached,
    lineage)."""
    machines, addr = nodes.this_job()
    if n * machines < 2:
        raise ConfigError(f"pipeline.posttrain_processes {n}: a launch needs at least 2 processes")
    launch = nodes.Launch(job(checkpoint, recipe, out, config), n, machines, addr, _free_port())
    joined = nodes.launch_file(home, nodes.run_id()) if machines > 1 else None
    logs = home / "posttrain-logs"
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=logs, prefix=f"{checkpoint.name}-", suffix=".log", delete=False) as named:
        log_file = Path(named.name)
    report = log_file.with_suffix(".json")
    env = os.environ | {"SHIPYARD_HOME": str(home), "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    argv = launch.argv(rank=0)
    log.info("post-training across %d processes on %d machine(s): %s", n * machines, machines, " ".join(argv))
    if joined is not None:
        nodes.publish(launch, joined)  # the other machines' pods join from here
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    said: dict[str, None] = {}  # each rank's own one-line error (`shipyard posttrain` ends an error so), once
    with report.open("w") as stdout, log_file.open("w") as kept:
        child = subprocess.Popen(
            argv, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True, start_new_session=True, bufsize=1
        )
        try:
            assert child.stderr is not None
            for line in child.stderr:
                kept.write(line)
                tail.append(line.rstrip())
                if line.startswith("error"):
                    said[line.rstrip()] = None
                log.info("%s", line.rstrip())
            code = child.wait()
        finally:
            _stop(child)
            if joined is not None:
                joined.unlink(missing_ok=True)
    if code != 0:
        raise TrainingError(
            f"post-training of {checkpoint} across {n * machines} processes failed (exit {code})"
            + "".join(f"; {line}" for line in said)
            + f"; the end of {log_file}:\n"
            + "\n".join(tail)
        )
    lines = [ln for ln in report.read_text().splitlines() if ln.strip()]
    try:
        return dict(json.loads("\n".join(lines[lines.index("{") :])))
    except ValueError:
        raise TrainingError(f"post-training across {n} processes printed no report; see {log_file}") from None


def _stop(job: subprocess.Popen[str]) -> None:
    """The launcher and every rank it started, gone: politely, then for sure (and any rank left over when the
    launcher itself has ended)."""
    if job.poll() is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(job.pid, sig)
        except ProcessLookupError:
            return
        try:
            job.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))  # the other machines of a job connect to it
        return int(s.getsockname()[1])
