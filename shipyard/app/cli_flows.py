"""The commands that run Shipyard's Prefect flows: watch, serve, and the one-command demo."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from shipyard.app.cli_common import ConfigOption, JsonOption, StoreOption, clear_errors, print_json
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
    from shipyard.orchestration.serve import serve, start_server

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


@clear_errors
def demo_command(
    directory: Annotated[Path, typer.Option("--dir", help="Where the demo keeps everything.")] = Path("shipyard-demo"),
    fmt: Annotated[
        str, typer.Option("--format", help="hf, or dcp: the run saves torch DCP checkpoints, converted on intake.")
    ] = "hf",
    as_json: JsonOption = False,
) -> None:
    """The embedded default end to end: an RL run on the CPU, watched, post-trained, gated, released and approved."""
    from shipyard.demo import end_to_end as demo

    if fmt not in ("hf", "dcp"):
        raise ConfigError(f"--format {fmt!r}: expected hf or dcp")
    console = Console(quiet=as_json)
    report = demo.run(directory, lambda line: console.print(line, highlight=False, soft_wrap=True), fmt=fmt)
    summary = demo.summary(report)
    if as_json:
        print_json(summary)
        return
    for line in demo.describe(summary):
        console.print(line, highlight=False, soft_wrap=True)


@clear_errors
def dashboard_command(
    store: StoreOption = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (default: dashboard.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: dashboard.port).")] = None,
    config: ConfigOption = None,
) -> None:
    """Serve the release dashboard: channels, releases, gate reports, the checkpoint stream, and approvals."""
    import uvicorn

    from shipyard.app.dashboard.app import create_app
    from shipyard.registry.stores import release_store

    settings = load_settings(config, **({"release": {"store": store}} if store else {}))
    address = (host or settings.dashboard.host, port or settings.dashboard.port)
    Console().print(f"dashboard: http://{address[0]}:{address[1]}  (store {release_store(settings).uri})")
    app = create_app(settings, release_store(settings))
    # Forwarded headers are judged by the app against dashboard.trusted_proxies, never by uvicorn's defaults.
    uvicorn.run(app, host=address[0], port=address[1], log_level="warning", proxy_headers=False)


@clear_errors
def dashboard_token_command(
    who: Annotated[str, typer.Option("--as", help="The approver the token is for.")],
) -> None:
    """Make a dashboard login token; the token goes to the approver, its hash into dashboard.tokens."""
    from shipyard.app.dashboard.auth import new_token

    token, digest = new_token()
    Console().print(f"token for {who} (give it to them, it is not stored): {token}")
    Console().print(f"config: dashboard: {{tokens: {{{who}: {digest}}}}}")
