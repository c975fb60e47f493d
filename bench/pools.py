"""Bench: the cost of going distributed — one checkpoint's release run through work pools, in place and split.

A `prefect server`, the deployments of `infra/prefect.yaml` on two process pools (`shipyard-light`, and
`shipyard-gpu` standing in for the Kubernetes pool, as `tests/test_work_pools.py` does), one worker per pool.
The same checkpoint (a short demo RL run's) is released three times, each in a fresh Shipyard home so nothing
is cached:

1. the library directly, `shipyard.orchestration.pipeline.release_checkpoint` in this process (the peer);
2. in place: a run of `release-checkpoint/light` that does every stage itself (the stage deployments turned
   off for that run through its job variables);
3. split: the same deployment, post-training and the screening/gate evaluations as runs on the GPU pool.

Measured: wall time from the run's creation to its completion (the library: the call), of which the worker's
pick-up (created → running), and the split form's stage runs' own time.

Run: `.venv/bin/python bench/pools.py` (about eight minutes, on an otherwise idle machine).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

TMP = Path(tempfile.mkdtemp(prefix="shipyard-bench-pools-"))
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
os.environ |= {
    "PREFECT_HOME": str(TMP / "prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_WORKER_QUERY_SECONDS": "2",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "TQDM_DISABLE": "1",
    "SHIPYARD_PROFILE": "demo",
}

from shipyard.app.serve import start_server  # noqa: E402
from shipyard.checkpoints import Checkpoint  # noqa: E402
from shipyard.demo.rl_run import run_demo  # noqa: E402
from shipyard.intake.scan import scan  # noqa: E402
from shipyard.intake.sources import open_source  # noqa: E402
from shipyard.orchestration import pipeline  # noqa: E402
from shipyard.settings import DemoSettings, Settings, load_settings  # noqa: E402

IN_PLACE = {"env": {"SHIPYARD_PIPELINE__POSTTRAIN_DEPLOYMENT": "", "SHIPYARD_PIPELINE__EVAL_DEPLOYMENT": ""}}


def config(name: str) -> Path:
    """A config file with a fresh home and release store; the workers read the one named by each run."""
    path = TMP / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"home": str(TMP / name / "home"), "release": {"store": str(TMP / name / "rel")}}))
    return path


def prefect(*args: str) -> None:
    subprocess.run([str(BIN / "prefect"), *args], cwd=ROOT, check=True, capture_output=True, timeout=600)


def pause_the_watch() -> None:
    """The bench starts its release runs itself: no scheduled poll beside them."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        watch = client.read_deployment_by_name("watch-run/light")
        for schedule in client.read_deployment_schedules(watch.id):
            client.update_deployment_schedule(watch.id, schedule.id, active=False)


def through_pools(checkpoint: Checkpoint, name: str, job_variables: dict[str, object]) -> dict[str, float]:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    parameters = {"checkpoint": checkpoint.as_dict(), "config": str(config(name))}
    run = run_deployment("release-checkpoint/light", parameters=parameters, job_variables=job_variables)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    stages = [r for r in runs if r.parent_task_run_id and r.flow_id != run.flow_id and r.created >= run.created]
    assert run.state is not None and run.state.is_completed(), run.state
    assert run.start_time and run.end_time
    return {
        "wall": (run.end_time - run.created).total_seconds(),
        "pickup": (run.start_time - run.created).total_seconds(),
        "stage runs": sum(r.total_run_time.total_seconds() for r in stages),
    }


def main() -> None:
    run = TMP / "run"
    run_demo(DemoSettings(out=run, steps=10, save_every=10), progress=False)
    [checkpoint] = scan(open_source(str(run)), TMP / "snapshots")

    settings: Settings = load_settings(config("library"))
    start = time.perf_counter()
    pipeline.release_checkpoint(checkpoint, settings)
    library = time.perf_counter() - start

    server = start_server(load_settings(config("server")), port=4311)
    workers = []
    try:
        prefect("work-pool", "create", "shipyard-light", "--type", "process")
        prefect("work-pool", "create", "shipyard-gpu", "--type", "process")
        os.environ["SHIPYARD_IMAGE"] = "unused-by-process-pools"
        prefect("--no-prompt", "deploy", "--prefect-file", "infra/prefect.yaml", "--all")
        pause_the_watch()
        for pool in ("shipyard-light", "shipyard-gpu"):
            log = (TMP / f"{pool}.log").open("ab")
            command = [str(BIN / "prefect"), "worker", "start", "--type", "process", "--pool", pool]
            workers.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        in_place = through_pools(checkpoint, "in-place", IN_PLACE)
        split = through_pools(checkpoint, "split", {})
    finally:
        for worker in workers:
            worker.terminate()
        server.terminate()
    print(f"library directly (peer): {library:.1f} s")
    for label, figures in (("in place", in_place), ("split", split)):
        shown = ", ".join(f"{k} {v:.1f} s" for k, v in figures.items())
        print(f"{label} through the pools: {shown}; {figures['wall'] / library:.2f} times the library")
    shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
