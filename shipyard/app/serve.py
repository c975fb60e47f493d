"""`shipyard serve`: run Shipyard's deployments here, starting a local Prefect server when none is configured.

Ephemeral Prefect cannot run schedules, so without `PREFECT_API_URL` a
`prefect server start` child process is started (its home under
`<home>/prefect`) and waited for. The deployments — the watch flow on an
interval, the release flow (each checkpoint its own run, started with an
idempotency key), the approval flow, promotion and rollback — are then served
from this process: `pipeline.release_deployment` and
`pipeline.approval_deployment` point the flows at each other; the release
dashboard is served beside them. `infra/prefect.yaml`
declares the same deployments for work pools (process, Kubernetes). Prefect reads
its settings once, when imported: this module imports it only after the server
address is known.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from shipyard.errors import ConfigError
from shipyard.settings import Settings

DEPLOYMENT = "shipyard"
RELEASE_DEPLOYMENT = f"release-checkpoint/{DEPLOYMENT}"
APPROVAL_DEPLOYMENT = f"await-approval/{DEPLOYMENT}"


def start_server(
    settings: Settings, host: str = "127.0.0.1", port: int = 4200, wait: float = 60.0
) -> subprocess.Popen[bytes]:
    """Start `prefect server start` with its home under Shipyard's home; return once its API answers."""
    home = (settings.home / "prefect").resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    log = (home / "server.log").open("ab")
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{host}:{port}/api"
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ConfigError(f"prefect server exited with {server.returncode}; see {home / 'server.log'}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                os.environ["PREFECT_API_URL"] = url
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.terminate()
    raise ConfigError(f"prefect server did not answer at {url} within {wait:.0f} s; see {home / 'server.log'}")


def serve(config: Path | None, settings: Settings, every_seconds: float) -> None:
    """Serve the deployments until interrupted (Prefect must be configured or started before this is called)."""
    os.environ["SHIPYARD_PIPELINE__RELEASE_DEPLOYMENT"] = RELEASE_DEPLOYMENT
    os.environ["SHIPYARD_PIPELINE__APPROVAL_DEPLOYMENT"] = APPROVAL_DEPLOYMENT
    from prefect import serve as prefect_serve
    from prefect.deployments.runner import RunnerDeployment

    from shipyard.flows.approval import await_approval, promote_release, rollback_release
    from shipyard.flows.release_checkpoint import release_checkpoint
    from shipyard.flows.watch_run import watch_run
    from shipyard.orchestration.prefect import ensure_slot

    ensure_slot(settings.pipeline)
    start_dashboard(settings)
    path = str(config.resolve()) if config else None
    deployments = [
        watch_run.to_deployment(DEPLOYMENT, interval=every_seconds, parameters={"config": path}),
        release_checkpoint.to_deployment(DEPLOYMENT),
        *(f.to_deployment(DEPLOYMENT) for f in (await_approval, promote_release, rollback_release)),
    ]
    prefect_serve(*(d for d in deployments if isinstance(d, RunnerDeployment)))


def start_dashboard(settings: Settings) -> None:
    """Serve the release dashboard from a background thread of this process."""
    import threading

    import uvicorn

    from shipyard.app.dashboard.app import create_app
    from shipyard.registry.stores import release_store

    app = create_app(settings, release_store(settings))
    config = uvicorn.Config(app, host=settings.dashboard.host, port=settings.dashboard.port, log_level="warning")
    threading.Thread(target=uvicorn.Server(config).run, name="dashboard", daemon=True).start()
