"""Bench: what Prefect orchestration costs per checkpoint, and how fast a new checkpoint reaches a release run.

1. Overhead per checkpoint. The same checkpoint (a short demo RL run's) is
   released twice in fresh homes: once by the library directly
   (`shipyard.orchestration.pipeline.release_checkpoint`, the peer: no Prefect), once by the
   `release-checkpoint` flow on Prefect's default ephemeral API. Each stage
   function (screen, post-train, gate, publish) is timed where it runs; the
   overhead is wall time minus the stages' own time. Then both again with
   every stage cached (a resumed run).
2. Detection to run start, polling: a checkpoint is completed while a loop
   runs the `watch-run` flow every `POLL` seconds; measured from the moment
   `trainer_state.json` is written to the start of the release subflow.

Run: `.venv/bin/python bench/orchestration.py` (about five minutes). Prefect's home is
a temporary directory.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TMP = Path(tempfile.mkdtemp(prefix="shipyard-bench-flows-"))
os.environ["PREFECT_HOME"] = str(TMP / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["TQDM_DISABLE"] = "1"

from shipyard.checkpoints import Checkpoint  # noqa: E402
from shipyard.demo.rl_run import run_demo  # noqa: E402
from shipyard.intake.scan import scan  # noqa: E402
from shipyard.intake.sources import open_source  # noqa: E402
from shipyard.orchestration import pipeline  # noqa: E402
from shipyard.settings import DemoSettings, Settings, load_settings  # noqa: E402

POLL = 5.0
STAGES = ("screen", "make_candidate", "gate_candidate", "publish_candidate")
spent: list[float] = []


def timed_stages() -> None:
    """Wrap the pipeline's stage functions so each call's own time is recorded in `spent`."""
    for name in STAGES:
        original = getattr(pipeline, name)

        def wrapper(*args: Any, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spent.append(time.perf_counter() - start)

        setattr(pipeline, name, wrapper)


def use_home(home: Path) -> Settings:
    os.environ["SHIPYARD_HOME"] = str(home)
    os.environ["SHIPYARD_PROFILE"] = "demo"
    return load_settings(None)


def overhead(checkpoint: Checkpoint) -> list[tuple[str, float, float]]:
    from prefect import flow
    from shipyard.flows.release_checkpoint import release_checkpoint

    flow(
        lambda: None, name="warm-up"
    )()  # the ephemeral API starts with the first flow of a process: not per checkpoint
    rows = []
    for label, home in (("fresh", "a"), ("cached (resumed run)", "a")):
        settings = use_home(TMP / f"direct-{home}")
        spent.clear()
        start = time.perf_counter()
        pipeline.release_checkpoint(checkpoint, settings)
        direct = time.perf_counter() - start - sum(spent)
        use_home(TMP / f"flow-{home}")
        spent.clear()
        start = time.perf_counter()
        release_checkpoint(checkpoint.as_dict())
        flow = time.perf_counter() - start - sum(spent)
        rows.append((label, direct, flow))
    return rows


def polling_latency(run: Path) -> float:
    """Seconds from a checkpoint's completion marker to its release subflow starting, with a POLL-second loop."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from shipyard.flows.watch_run import watch_run

    watched = TMP / "watched"
    shutil.copytree(run, watched, ignore=shutil.ignore_patterns("checkpoint-10"))
    use_home(TMP / "flow-a")  # stages cached: the latency is the orchestration's
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            watch_run(source=str(watched))
            stop.wait(POLL)

    thread = threading.Thread(target=loop)
    thread.start()
    time.sleep(POLL * 1.5)
    staged = TMP / "staging-checkpoint"
    shutil.copytree(run / "checkpoint-10", staged)
    marker = (staged / "trainer_state.json").read_text()
    (staged / "trainer_state.json").unlink()
    staged.rename(watched / "checkpoint-10")
    completed = time.time()
    (watched / "checkpoint-10" / "trainer_state.json").write_text(marker)
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["release-checkpoint"])))
            started = [r.start_time.timestamp() for r in runs if r.start_time and r.start_time.timestamp() > completed]
            if started:
                break
            time.sleep(0.1)
    stop.set()
    thread.join()
    return min(started) - completed


def main() -> None:
    run = TMP / "run"
    run_demo(DemoSettings(out=run, steps=10, save_every=10), progress=False)
    [checkpoint] = scan(open_source(str(run)), TMP / "snapshots")
    timed_stages()
    for label, direct, flow in overhead(checkpoint):
        print(f"overhead, {label}: library {direct:.2f} s, flow {flow:.2f} s beyond the stages' own time")
    latencies = [polling_latency(run)]
    print(f"polling every {POLL:.0f} s: completion → release run start {statistics.median(latencies):.2f} s")
    shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
