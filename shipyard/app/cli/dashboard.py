"""The dashboard commands: serve the release dashboard, and make an approver's login token."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from shipyard.app.cli.common import ConfigOption, StoreOption, clear_errors
from shipyard.settings import load_settings


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
    print(f"token for {who} (give it to them, it is not stored): {token}")  # plain print: never wrapped
    print(f"config: dashboard: {{tokens: {{{who}: {digest}}}}}")
