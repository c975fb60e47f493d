"""The commands that run Shipyard's Prefect flows: watch and serve."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console

from shipyard.app.cli.common import ConfigOption, JsonOption, clear_errors, print_json
from shipyard.errors import ConfigError
from shipyard.settings import ephemeral_prefect_defaults, load_settings, prefect_api_url


@clear_errors
def watch_command(
    source: Annotated[str | None, typer.Option(help="The run to watch (default: watch.source).")] = None,
    once: Annotated[bool, typer.Option("--once", help="Process what is there now, then exit.")] = False,
    every: Annotated[float, typer.Option(help="Seconds between polls when not --once.")] = 30.0,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Watch an RL run with the watch flow: each selected checkpoint is screened, post-trained, gated and published."""
    from shipyard.intake.sources import open_source
    from shipyard.profiles import check

    settings = load_settings(config, **({"watch": {"source": source}} if source else {}))
    if not settings.watch.source:
        raise ConfigError("no source to watch: give --source or set watch.source")
    check(settings)
    open_source(settings.watch.source, settings.s3, settings.hub).list_files()  # a wrong run fails before Prefect
    ephemeral_prefect_defaults()
    from shipyard.flows.watch_run import watch_run

    while True:
        outcomes = watch_run(config=str(config) if config else None, source=source)
        if as_json:
            print_json(outcomes)
        else:
            for o in outcomes:
                version = f" v{o['version']}" if o["version"] else ""
                Console().print(f"step {o['step']}: {o['state']}{version} {o['reason']}".rstrip())
        if once:
            return
        time.sleep(every)


@clear_errors
def serve_command(
    every: Annotated[float, typer.Option(help="Seconds between runs of the watch flow.")] = 60.0,
    port: Annotated[int, typer.Option(help="Port of the local Prefect server, when one is started.")] = 4200,
    config: ConfigOption = None,
) -> None:
    """Serve the watch, release, approval, promotion and rollback deployments (starting a Prefect server if needed)."""
    from shipyard.app.serve import serve, start_server

    settings = load_settings(config)
    server = None
    if not prefect_api_url():
        server = start_server(settings, port=port)
    api = prefect_api_url() or ""
    Console().print(
        f"Prefect UI: {api.removesuffix('/api')}  (API {api}); serving Shipyard's deployments, Ctrl-C stops"
    )
    try:
        serve(config, settings, every)
    finally:
        if server is not None:
            server.terminate()
            server.wait()
