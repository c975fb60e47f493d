"""The `shipyard` command line, one module per stage. Each command is a thin shell over a library function.

Commands that report state take `--json` and then print only JSON on stdout.
Every error ends a command with one line on stderr and exit status 2
(`common.clear_errors`); `shipyard --debug …` keeps the traceback.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points, version
from typing import Annotated, Any

import typer
from pydantic import ByteSize
from rich.console import Console
from rich.filesize import decimal
from rich.table import Table

from shipyard.app.cli import dashboard, evals, flows, init, intake, posttraining, releases, trust
from shipyard.app.cli.common import ConfigOption, Debug, JsonOption, clear_errors, print_json
from shipyard.settings import load_settings

app = typer.Typer(
    help="Shipyard: gated, versioned releases from the checkpoints of long RL runs.", no_args_is_help=True
)


def _print_version(value: bool) -> None:
    if value:
        print(f"shipyard {version('shipyard')}")
        raise typer.Exit()


@app.callback()
def root(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Keep the traceback of an error.")] = False,
) -> None:
    """Shipyard: gated, versioned releases from the checkpoints of long RL runs."""
    Debug.on = debug or bool(os.environ.get("SHIPYARD_DEBUG"))  # per invocation: an in-process caller runs many


@app.command("config")
@clear_errors
def config_command(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Show the settings in force, after the file, the environment and defaults."""
    settings = load_settings(config)
    data = settings.model_dump(mode="json")
    if as_json:
        print_json(data)
        return
    table = Table("key", "value", title=f"settings ({settings.config_file or 'defaults and environment'})")
    data = {k: v for k, v in data.items() if k != "demo"} | {"demo": data["demo"]}  # the demo's section last
    sizes = {f"cache.{name}" for name, f in type(settings.cache).model_fields.items() if f.annotation is ByteSize}
    for key, value in _flatten(data):
        table.add_row(key, decimal(value) if key in sizes else str(value))
    Console().print(table)


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


@app.command("doctor")
@clear_errors
def doctor_command(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Check this machine and these settings: versions, the torch device, Prefect's API, the release store, chromium.

    Exit 1 when a check fails; warnings are what Shipyard works without.
    """
    from shipyard.app.doctor import FAIL, diagnose

    checks = diagnose(load_settings(config))
    if as_json:
        print_json([c.as_dict() for c in checks])
    else:
        table = Table("check", "status", "detail")
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}
        for c in checks:
            table.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", c.detail)
        Console().print(table)
    raise typer.Exit(1 if any(c.status == FAIL for c in checks) else 0)


app.command("init")(init.init_command)
app.command("checkpoints")(intake.checkpoints_command)
app.command("gc")(intake.gc_command)
app.command("posttrain")(posttraining.posttrain_command)
app.command("eval")(evals.eval_command)
app.command("gate")(evals.gate_command)
app.command("publish")(releases.publish_command)
app.command("pull")(releases.pull_command)
app.command("promote")(releases.promote_command)
app.command("mirror")(releases.mirror_command)
app.add_typer(releases.releases_app, name="releases")
app.command("approve")(trust.approve_command)
app.command("reject")(trust.reject_command)
app.command("rollback")(trust.rollback_command)
app.command("keygen")(trust.keygen_command)
app.add_typer(trust.policy_app, name="policy")
app.add_typer(trust.ledger_app, name="ledger")
app.add_typer(trust.trust_app, name="trust")
app.command("watch")(flows.watch_command)
app.command("serve")(flows.serve_command)
app.command("dashboard")(dashboard.dashboard_command)
app.command("dashboard-token")(dashboard.dashboard_token_command)
for plugin in entry_points(group="shipyard.commands"):  # the demo's commands: the CLI never imports the demo
    plugin.load()(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
