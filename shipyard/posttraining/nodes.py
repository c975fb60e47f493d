"""One post-training across several machines: the pods of an indexed Kubernetes Job, joined by torchrun.

The GPU job template (`infra/kubernetes/gpu-job-template.json`, variable `nodes`) runs `nodes` pods of one Job in
completion mode Indexed (each pod has its `JOB_COMPLETION_INDEX`), each through
`python -m shipyard.posttraining.nodes --nodes=N -- <Prefect's command>`:

- pod 0 runs the stage run (Prefect's command) with `POSTTRAIN_NODES=N` and `POSTTRAIN_NODE0_ADDR`, its address
  (not `SHIPYARD_` variables: those are settings). When the stage post-trains, it writes the launch — the job's
  arguments, its address and port, processes per node — to `<home>/launch/<flow run id>.json` and launches
  machine rank 0 (`shipyard.posttraining.launch`);
- pod k > 0 waits for that file (every pod of the Job has the flow run's id in `PREFECT__FLOW_RUN_ID`), launches
  the same job as machine rank k, and exits with its status. If the stage run ends without a launch (its
  candidate was cached, or it failed first) the pod ends too: 0 after a completed run, 1 otherwise.

torchrun's static rendezvous joins the machines at pod 0's address (`accelerate launch --num_machines`); the
ranks of all machines form one job, so the recipe's FSDP or DeepSpeed settings shard across all of them. Every
pod mounts the shared home at the same path, where the checkpoint snapshot, the recipe's data and the candidate
are. A launch file older than the pod that reads it by more than `STALE_SECONDS` is a crashed attempt's and is
not joined; pod 0 removes it before it starts.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from uuid import UUID

from shipyard.caches import write_whole
from shipyard.errors import ConfigError

NODES, ADDR, INDEX, RUN_ID = "POSTTRAIN_NODES", "POSTTRAIN_NODE0_ADDR", "JOB_COMPLETION_INDEX", "PREFECT__FLOW_RUN_ID"
STALE_SECONDS = 300.0


@dataclass(frozen=True)
class Launch:
    """What every machine runs: `job` (python arguments) as `per_node` processes on each of `nodes` machines."""

    job: list[str]
    per_node: int
    nodes: int = 1
    addr: str = "127.0.0.1"
    port: int = 29500

    def argv(self, rank: int = 0) -> list[str]:
        """`accelerate launch` of the job as machine `rank` (torchrun underneath: one process per GPU)."""
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
        launcher += ["--num_processes", str(self.per_node * self.nodes), "--num_machines", str(self.nodes)]
        if self.nodes > 1:
            launcher += ["--machine_rank", str(rank), "--main_process_ip", self.addr]
        return [*launcher, "--main_process_port", str(self.port), *self.job]


def this_job() -> tuple[int, str]:
    """How many machines this stage's job spans, and machine 0's address (set on pod 0 by `main`)."""
    raw = os.environ.get(NODES, "1")
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{NODES}={raw!r}: the number of machines must be a whole number of at least 1")
    return int(raw), os.environ.get(ADDR, "127.0.0.1")


def launch_file(home: Path, run_id: str) -> Path:
    return home / "launch" / f"{run_id}.json"


def run_id() -> str:
    """The flow run all pods of the Job belong to (the Prefect worker sets it in each)."""
    found = os.environ.get(RUN_ID)
    if not found:
        raise ConfigError(f"a post-training across machines runs in a Prefect stage run's pods: {RUN_ID} is not set")
    return found


def publish(launch: Launch, path: Path) -> None:
    """Machine 0: tell the others what to join."""
    write_whole(path, json.dumps(asdict(launch)))


def wait_for(
    path: Path, ended: Callable[[], str | None], started: float, timeout: float, poll: float = 2.0
) -> Launch | str:
    """The launch machine 0 published for this attempt, or why there will be none: `ended()` says the stage run's
    final state (None while it goes on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.stat().st_mtime >= started - STALE_SECONDS:
            return Launch(**json.loads(path.read_text()))
        if state := ended():
            return state
        time.sleep(poll)
    return f"no launch within {timeout:.0f} s"


def _prefect_state(flow_run_id: str) -> Callable[[], str | None]:
    """The flow run's final state type ('COMPLETED', 'FAILED', …) once it has one; None before, or with no API."""

    def ended() -> str | None:
        if not os.environ.get("PREFECT_API_URL"):
            return None
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(flow_run_id)).state
        return state.type.value if state is not None and state.is_final() else None

    return ended


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shipyard.posttraining.nodes", description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1, help="Machines (pods) of this Job.")
    parser.add_argument("--wait-seconds", type=float, default=24 * 3600, help="How long pod k > 0 waits for pod 0.")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then Prefect's command (pod 0 runs it).")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    index = int(os.environ.get(INDEX, "0"))
    if args.nodes < 2 or index == 0:
        if args.nodes > 1:
            from shipyard.settings import load_settings

            launch_file(load_settings(None).home, run_id()).unlink(missing_ok=True)  # a crashed attempt's
            os.environ |= {NODES: str(args.nodes), ADDR: socket.gethostbyname(socket.gethostname())}
        if not command:
            parser.error("pod 0 needs the command to run after --")
        os.execvp(command[0], command)
    return join(index, args.wait_seconds)


def join(rank: int, wait_seconds: float) -> int:
    """Pod `rank` > 0: wait for machine 0's launch, run this machine's part of it; its exit status."""
    from shipyard.settings import load_settings

    started, flow_run = time.time(), run_id()
    found = wait_for(launch_file(load_settings(None).home, flow_run), _prefect_state(flow_run), started, wait_seconds)
    if isinstance(found, str):
        sys.stderr.write(f"machine {rank}: stage run {flow_run} has no launch to join ({found})\n")
        return 0 if found == "COMPLETED" else 1
    sys.stderr.write(f"machine {rank} of {found.nodes}: joining {found.addr}:{found.port}\n")
    env = os.environ | {"TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(found.argv(rank), env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
