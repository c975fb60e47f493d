"""Work pools end to end: a real `prefect server`, `prefect deploy` of infra/prefect.yaml as written, and
`prefect worker start` processes for the light pool and the heavy (GPU) pool, here both process pools.

The pools share only what a cluster shares: the release store (S3, on moto), the Prefect server, and the Shipyard
home volume, which the GPU pool mounts at another path. Each worker runs from its own virtual environment holding
the built wheel (not the source tree), with its own config file, HOME and PREFECT_HOME; the light workers' Prefect
results are kept on the shared volume (a new light worker is a new machine). Post-training runs across two
processes (`pipeline.posttrain_processes`, gloo ranks on this CPU).

A checkpoint appears in the watched run → the scheduled watch run starts a release run on the light pool → it runs
post-training and the gate as runs of their own on the heavy pool → the light worker is killed with its release
run mid-release, and a new one started → the run is marked crashed (heartbeats), scheduled again by the watch flow,
and resumes from its cached stages → one release → the approval run suspends (its process exits) → an approval by
the CLI resumes it → `stable` moves. Then an approval run nobody answers expires (the server fails the suspended
run), its release is approved later by the CLI, and the rollback deployment, through the prefect-ui door, puts
`stable` back. The workers' and the server's logs are kept in test-artifacts/ on failure.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import psutil
import pytest
import yaml

from shipyard.registry.approval_policy import DoorRule
from shipyard.registry.doors import hash_token
from shipyard.registry.ledger import Ledger
from shipyard.registry.publish import publish
from shipyard.registry.stores import S3Store

from .conftest import _free_port
from .helpers import PIPELINE, Keys, gated, protect
from .wheelenv import build_wheel, wheel_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "work-pools"
BIN = Path(sys.executable).parent
CRASHED_AFTER = 45  # seconds without a heartbeat (runs send one every 30 s, as infra/prefect.yaml sets)


class Cluster:
    """A Prefect server and workers, each a process group of its own, logging under `logs`."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env, self.procs = logs, env, {}  # type: dict[str, subprocess.Popen[bytes]]
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, *command: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        env = self.env | (env or {})
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        """The process and everything it started, at once: the machine went away."""
        proc = self.procs.pop(name)
        family = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
        for pid in family:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(30)

    def prefect(self, *args: str, env: dict[str, str] | None = None) -> str:
        command = [str(BIN / "prefect"), *args]
        done = subprocess.run(
            command, env=self.env | (env or {}), cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    def stop(self) -> None:
        for name in list(self.procs):
            self.kill(name)


def wait_for(what: str, check: Callable[[], Any], timeout: float, logs: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; logs in {logs}")


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SHIPYARD_"))}
    env |= {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        # A watch run the killed worker had taken but not started holds the deployment's slot (concurrency_limit 1)
        # until its lease expires: 300 s by default, the least Prefect allows here.
        "PREFECT_SERVER_CONCURRENCY_INITIAL_DEPLOYMENT_LEASE_DURATION": "30",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_PREFETCH_SECONDS": "2",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "TQDM_DISABLE": "1",
        "SHIPYARD_PROFILE": "demo",
    }
    cluster = Cluster(tmp_path / "logs", env)
    cluster.start("server", str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port))
    wait_for("the server", lambda: _healthy(env["PREFECT_API_URL"]), 120, cluster.logs)
    yield cluster
    cluster.stop()
    if getattr(request.node, "failed_call", True):  # set by conftest's report hook
        shutil.rmtree(ARTIFACTS, ignore_errors=True)
        shutil.copytree(cluster.logs, ARTIFACTS)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def configure(
    tmp_path: Path, cluster: Cluster, keys: Keys, s3_endpoint: str
) -> tuple[S3Store, Path, dict[str, dict[str, str]], dict[str, Path]]:
    """A protected release store on S3, a run directory still empty, and each pool's machine: a virtual
    environment with the wheel, its config file (at its own path, naming the shared home where that machine mounts
    it), HOME and PREFECT_HOME."""
    run, shared = tmp_path / "run", tmp_path / "shared-home"
    run.mkdir()
    shared.mkdir()
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="lab-releases")
    store = S3Store("s3://lab-releases/main", s3_endpoint)
    protect(store, keys, doors={"prefect-ui": DoorRule(key=keys.public("prefect-ui"), attests=["ana"])})
    wheel = build_wheel(tmp_path / "wheel")
    config = {
        "home": str(shared),
        "release": {"store": store.uri},
        "s3": {"endpoint_url": s3_endpoint},
        "watch": {"source": str(run)},
        "approval": {"poll_seconds": 1},
        "pipeline": {"crashed_after_seconds": CRASHED_AFTER},
        "trust": {
            "owners": [keys.fingerprint("owner")],
            "door_keys": {"prefect-ui": str(keys.path("prefect-ui"))},
            "gate_key": str(PIPELINE.path("gate")),
        },
        "dashboard": {"tokens": {"ana": hash_token("ana-token")}},
    }
    machines, pythons = {}, {}
    aws = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    for pool, etc in (("light", "etc"), ("gpu", "opt/conf")):
        machine = tmp_path / pool
        mount = machine / "mnt" / "shipyard"  # the same volume, mounted elsewhere
        mount.parent.mkdir(parents=True)
        mount.symlink_to(shared)
        (machine / etc).mkdir(parents=True)
        (machine / etc / "shipyard.yaml").write_text(yaml.safe_dump(config | {"home": str(mount)}))
        machines[pool] = aws | {
            "SHIPYARD_CONFIG": str(machine / etc / "shipyard.yaml"),
            "HOME": str(machine),
            "PREFECT_HOME": str(machine / ".prefect"),
        }
        pythons[pool] = wheel_env(wheel, machine / "venv")
    machines["light"]["PREFECT_LOCAL_STORAGE_PATH"] = str(shared / "prefect-results")
    cluster.env["SHIPYARD_CONFIG"] = machines["light"]["SHIPYARD_CONFIG"]  # the operator's CLI, on the light VM
    return store, run, machines, pythons


@contextmanager
def client_of(cluster: Cluster) -> Iterator[Any]:
    """A Prefect client of the test's server (Prefect's settings are read once per process: set them here)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: cluster.env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        yield client


def runs_of(cluster: Cluster, flow: str) -> list[Any]:
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with client_of(cluster) as client:
        return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])))


def test_a_checkpoint_goes_through_the_work_pools_to_stable_and_a_killed_worker_loses_nothing(
    tmp_path: Path, rl_checkpoint: Path, tiny_model_dir: Path, s3_endpoint: str, cluster: Cluster
) -> None:
    keys = Keys(tmp_path / "keys")
    store, run, machines, pythons = configure(tmp_path, cluster, keys, s3_endpoint)
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.schedules import IntervalSchedule

    cluster.prefect("work-pool", "create", "shipyard-light", "--type", "process")
    cluster.prefect("work-pool", "create", "shipyard-gpu", "--type", "process")  # a Kubernetes pool on a cluster
    deploy = ["--no-prompt", "deploy", "--prefect-file", "infra/prefect.yaml", "--all"]
    cluster.prefect(*deploy, env={"SHIPYARD_IMAGE": "unused-by-process-pools"})
    with client_of(cluster) as client:  # the operator's knobs: poll every 10 s instead of 300; two ranks, no GPU
        watch = client.read_deployment_by_name("watch-run/light")
        [schedule] = client.read_deployment_schedules(watch.id)
        client.update_deployment_schedule(
            watch.id, schedule.id, schedule=IntervalSchedule(interval=timedelta(seconds=10))
        )
        posttrain = client.read_deployment_by_name("posttrain-checkpoint/gpu")
        variables = posttrain.job_variables or {}
        env = variables.get("env", {}) | {"SHIPYARD_PIPELINE__POSTTRAIN_PROCESSES": "2"}
        client.update_deployment(posttrain.id, DeploymentUpdate(job_variables=variables | {"env": env}))

    def worker(pool: str) -> list[str]:  # the machine's own environment: its python, the wheel
        start = "import sys; from prefect.cli import app; sys.exit(app())"
        return [str(pythons[pool]), "-c", start, "worker", "start", "--type", "process", "--pool", f"shipyard-{pool}"]

    cluster.start("light-1", *worker("light"), env=machines["light"])
    cluster.start("gpu", *worker("gpu"), env=machines["gpu"])
    shutil.copytree(rl_checkpoint, run / "checkpoint-10")  # a checkpoint appears in the watched run

    running = StateType.RUNNING
    wait_for(
        "post-training to start on the GPU pool",
        lambda: any(r.state_type == running for r in runs_of(cluster, "posttrain-checkpoint")),
        600,
        cluster.logs,
    )
    [release] = runs_of(cluster, "release-checkpoint")
    cluster.kill("light-1")  # the light worker and the release run it was executing
    fresh = machines["light"] | {"HOME": str(tmp_path / "light-2"), "PREFECT_HOME": str(tmp_path / "light-2/.prefect")}
    cluster.start("light-2", *worker("light"), env=fresh)  # another machine, the same shared volume

    def published() -> bool:
        return Ledger(store).refresh().channel("main", "candidate") == 1

    wait_for("the release", published, 900, cluster.logs)
    wait_for(
        "the approval run to suspend",
        lambda: [r for r in runs_of(cluster, "await-approval") if r.state and r.state.name == "Suspended"],
        300,
        cluster.logs,
    )
    time.sleep(CRASHED_AFTER + 20)  # a suspended run sends no heartbeats, and must not be taken for a dead one
    assert [r.state.name for r in runs_of(cluster, "await-approval") if r.state] == ["Suspended"]
    cli = [str(pythons["light"]), "-c", "from shipyard.app.cli.main import main; main()"]
    approve = [*cli, "approve", "v1", "--key", str(keys.path("ana")), "--note", "through the pools"]
    done = subprocess.run(approve, env=cluster.env | machines["light"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    wait_for("stable to move", lambda: Ledger(store).refresh().channel("main", "stable") == 1, 300, cluster.logs)
    wait_for(
        "the approval run to finish",
        lambda: all(r.state_type == StateType.COMPLETED for r in runs_of(cluster, "await-approval")),
        300,
        cluster.logs,
    )

    ledger = Ledger(store).refresh()
    assert list(ledger.releases) == [("main", 1)]  # published once
    from shipyard.registry.publish import manifest

    lineage = manifest(store, ledger.releases[("main", 1)])["lineage"]
    assert lineage["world_size"] == 2, lineage  # post-trained by two ranks on the GPU pool
    with client_of(cluster) as client:
        release = client.read_flow_run(release.id)
        history = [s.name for s in client.read_flow_run_states(release.id)]
    assert release.state_type == StateType.COMPLETED and release.work_pool_name == "shipyard-light"
    assert "Crashed" in history and release.run_count >= 2, history  # crashed with its worker, then resumed
    [posttrain] = runs_of(cluster, "posttrain-checkpoint")  # not run again after the crash
    assert posttrain.state_type == StateType.COMPLETED and posttrain.work_pool_name == "shipyard-gpu"
    gates = [r for r in runs_of(cluster, "evaluate-checkpoint") if r.parameters["stage"] == "gate"]
    assert [r.work_pool_name for r in gates] == ["shipyard-gpu"]

    # An approval nobody answers: its suspended run is failed by the server when `approval.wait_seconds` pass, and
    # the release stays a candidate that a later approval moves. Then the rollback flow, through its deployment and
    # the prefect-ui door with ana's token, puts stable back on v1.
    publish(gated(tmp_path / "v2", tiny_model_dir), "main", store)
    from prefect.deployments import run_deployment

    from shipyard.orchestration.prefect import approval_tags

    with client_of(cluster) as client:
        deployment = client.read_deployment_by_name("await-approval/light")
        env = (deployment.job_variables or {}).get("env", {}) | {"SHIPYARD_APPROVAL__WAIT_SECONDS": "5"}
        unanswered = run_deployment(
            "await-approval/light",
            parameters={"line": "main", "version": 2},
            job_variables={"env": env},
            tags=approval_tags("main", 2),
            timeout=0,
        )

    def expired() -> Any:
        with client_of(cluster) as client:
            run = client.read_flow_run(unanswered.id)
        return run.state_type == StateType.FAILED and run

    run = wait_for("the unanswered approval to expire", expired, 300, cluster.logs)
    assert run.state and "never resumed" in (run.state.message or ""), run.state
    assert Ledger(store).refresh().channel("main", "stable") == 1  # nothing moved; v2 is still a candidate
    approve = [*cli, "approve", "v2", "--key", str(keys.path("ana")), "--note", "after the wait"]
    done = subprocess.run(approve, env=cluster.env | machines["light"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert Ledger(store).refresh().channel("main", "stable") == 2

    with client_of(cluster) as client:
        rollback = run_deployment(
            "rollback-release/light",
            parameters={"line": "main", "note": "v2 regressed", "approver": "ana", "token": "ana-token"},
            timeout=0,
        )
    wait_for("the rollback", lambda: Ledger(store).refresh().channel("main", "stable") == 1, 300, cluster.logs)
    with client_of(cluster) as client:
        assert wait_for(
            "the rollback run to finish",
            lambda: client.read_flow_run(rollback.id).state_type == StateType.COMPLETED,
            120,
            cluster.logs,
        )
    [event] = [e for e in Ledger(store).refresh().approvals[("main", 1)] if e["type"] == "rolled_back"]
    assert (event["by"], event["door"]) == ("ana", "prefect-ui")
