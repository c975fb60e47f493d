"""The release commands: publish, pull, releases list|show|diff, promote, rollback, mirror, ledger verify.

Thin shells over `shipyard.publish`, `shipyard.mirror` and the ledger; `shipyard.cli` registers them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from shipyard.cli_common import ConfigOption, JsonOption, LineOption, StoreOption, clear_errors, err, print_json
from shipyard.settings import load_settings


def _releases(config: Path | None, store: str | None, line: str | None) -> tuple[Any, str]:
    from shipyard.stores import open_store

    settings = load_settings(config)
    uri = store or settings.release.store or str(settings.home / "releases")
    return open_store(uri, settings.s3.endpoint_url), line or settings.release.line


def _release_row(release: Any, state: Any) -> dict[str, Any]:
    channels = sorted(
        c for (line, c), history in state.channels.items() if line == release.line and history[-1] == release.version
    )
    return {"line": release.line, "version": release.version, "channels": channels, **release.data, "at": release.at}


@clear_errors
def publish_command(
    model: Annotated[Path, typer.Option(help="The candidate directory (with lineage.json and gate.json if present).")],
    store: StoreOption = None,
    line: LineOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Publish a candidate as the next release of a line; publishing it again names the existing release."""
    from shipyard.publish import publish

    releases, name = _releases(config, store, line)
    published = publish(model, name, releases, progress=not as_json)
    if as_json:
        print_json({"created": published.created, "line": name, "version": published.release.version})
        return
    verb = "published" if published.created else "already released"
    Console().print(f"{verb}: {name} v{published.release.version} in {releases.uri}")


@clear_errors
def pull_command(
    ref: Annotated[str, typer.Argument(help="A version (3 or v3) or a channel (stable, candidate).")],
    out: Annotated[Path, typer.Option(help="Directory to write the release into.")],
    store: StoreOption = None,
    line: LineOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Materialize a release, verifying every file's digest."""
    from shipyard.publish import pull

    releases, name = _releases(config, store, line)
    release = pull(releases, name, ref, out)
    if as_json:
        print_json({"line": name, "version": release.version, "path": str(out)})
        return
    Console().print(f"{name} v{release.version} → {out}")


releases_app = typer.Typer(help="The releases of a line.", no_args_is_help=True)


@releases_app.command("list")
@clear_errors
def releases_list_command(
    store: StoreOption = None, line: LineOption = None, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """List the releases of a line with the channels pointing at them."""
    from shipyard.ledger import Ledger

    releases, name = _releases(config, store, line)
    state = Ledger(releases).refresh()
    rows = [_release_row(r, state) for (n, _), r in sorted(state.releases.items()) if n == name]
    if as_json:
        print_json(rows)
        return
    table = Table("version", "channels", "candidate", "checkpoint", title=f"{name} in {releases.uri}")
    for row in rows:
        table.add_row(
            f"v{row['version']}",
            ", ".join(row["channels"]),
            row["candidate_digest"][:12],
            row["checkpoint_digest"][:12],
        )
    Console().print(table)


@releases_app.command("show")
@clear_errors
def releases_show_command(
    ref: Annotated[str, typer.Argument(help="A version (3 or v3) or a channel.")],
    store: StoreOption = None,
    line: LineOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """A release's manifest: files, lineage, gate decision, eval scores, channels and approvals."""
    from shipyard.ledger import Ledger
    from shipyard.publish import manifest, resolve

    releases, name = _releases(config, store, line)
    state = Ledger(releases).refresh()
    release = resolve(state, name, ref)
    shown = _release_row(release, state) | {
        "manifest": manifest(releases, release),
        "approvals": state.approvals.get((name, release.version), []),
    }
    if as_json:
        print_json(shown)
        return
    Console().print_json(json.dumps(shown, default=str))


@releases_app.command("diff")
@clear_errors
def releases_diff_command(
    old: Annotated[str, typer.Argument(help="The earlier release (version or channel).")],
    new: Annotated[str, typer.Argument(help="The later release (version or channel).")],
    store: StoreOption = None,
    line: LineOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """What changed between two releases: files, checkpoint, and per-task eval score deltas."""
    from shipyard.publish import diff

    releases, name = _releases(config, store, line)
    changes = diff(releases, name, old, new)
    if as_json:
        print_json(changes)
        return
    Console().print(
        f"v{changes['from']} → v{changes['to']}: files changed: {', '.join(changes['files_changed']) or 'none'}"
    )
    table = Table("task", "metric", "delta")
    for task, metrics in changes["score_deltas"].items():
        for metric, delta in metrics.items():
            table.add_row(task, metric, f"{delta:+.3f}")
    Console().print(table)


@clear_errors
def promote_command(
    version: Annotated[str, typer.Argument(help="The version to promote (3 or v3).")],
    channel: Annotated[str, typer.Option(help="The channel to move.")] = "stable",
    store: StoreOption = None,
    line: LineOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Point a channel at a release: one ledger event, no weights copied.

    The approval channel (stable) moves only for a release with enough approvals: use `shipyard approve`.
    """
    from shipyard.approvals import promote_approved
    from shipyard.notify import announce_latest

    releases, name = _releases(config, store, line)
    settings = load_settings(config)
    version_number = promote_approved(releases, name, int(version.removeprefix("v")), channel, settings.approval)
    announce_latest(settings.notify, releases)
    _channel_moved(name, channel, version_number, as_json)


@clear_errors
def rollback_command(
    channel: Annotated[str, typer.Option(help="The channel to move back.")] = "stable",
    store: StoreOption = None,
    line: LineOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move a channel back to the release it pointed at before, in one step."""
    from shipyard.notify import announce_latest
    from shipyard.publish import rollback

    releases, name = _releases(config, store, line)
    release = rollback(releases, name, channel)
    announce_latest(load_settings(config).notify, releases)
    _channel_moved(name, channel, release.version, as_json)


def _channel_moved(line: str, channel: str, version: int, as_json: bool) -> None:
    if as_json:
        print_json({"line": line, "channel": channel, "version": version})
    else:
        Console().print(f"{channel} → {line} v{version}")


@clear_errors
def mirror_command(
    repo: Annotated[str, typer.Option(help="The Hub model repo to mirror into (org/name).")],
    store: StoreOption = None,
    line: LineOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mirror the line's releases to a Hub repo (one commit and a tag each; channels as branches); catches up."""
    from shipyard.mirror import mirror

    releases, name = _releases(config, store, line)
    done = mirror(releases, name, repo, load_settings(config).hub.endpoint)
    if as_json:
        print_json({"repo": repo, "mirrored": done})
        return
    Console().print(f"{repo}: mirrored {', '.join(f'v{v}' for v in done) or 'nothing new'}")


ledger_app = typer.Typer(help="The release ledger.", no_args_is_help=True)


@ledger_app.command("verify")
@clear_errors
def ledger_verify_command(store: StoreOption = None, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Check the hash chain and that every blob a release names exists; exit 1 on any problem."""
    from shipyard.publish import verify

    releases, _ = _releases(config, store, None)
    problems = verify(releases)
    if as_json:
        print_json({"store": releases.uri, "problems": problems})
    else:
        for problem in problems:
            err.print(f"[red]{problem}[/]", highlight=False, soft_wrap=True)
        Console().print(f"{releases.uri}: {'sound' if not problems else f'{len(problems)} problem(s)'}")
    raise typer.Exit(1 if problems else 0)


@clear_errors
def approve_command(
    version: Annotated[str, typer.Argument(help="The release to approve (3 or v3).")],
    who: Annotated[str, typer.Option("--as", help="Your identity, as listed in approval.approvers.")],
    note: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    store: StoreOption = None,
    line: LineOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Approve a release; with enough distinct approvers it is promoted to the stable channel.

    A Prefect approval run waiting for this release is resumed with the same decision.
    """
    from shipyard.doors import approve_release
    from shipyard.ledger import Ledger

    releases, name = _releases(config, store, line)
    settings, number = load_settings(config), int(version.removeprefix("v"))
    rules = settings.approval
    approve_release(settings, releases, name, number, who, note)
    promoted = Ledger(releases).refresh().channel(name, rules.channel) == number
    if as_json:
        print_json({"line": name, "version": int(version.removeprefix("v")), "approved_by": who, "promoted": promoted})
        return
    Console().print(f"{name} {version}: approved by {who}" + (f"; promoted to {rules.channel}" if promoted else ""))


@clear_errors
def reject_command(
    version: Annotated[str, typer.Argument(help="The release to reject (3 or v3).")],
    who: Annotated[str, typer.Option("--as", help="Your identity, as listed in approval.approvers.")],
    note: Annotated[str, typer.Option(help="Why (required).")] = "",
    store: StoreOption = None,
    line: LineOption = None,
    config: ConfigOption = None,
) -> None:
    """Reject a release, with a note saying why. A Prefect approval run waiting for it is resumed and ends."""
    from shipyard.doors import reject_release

    releases, name = _releases(config, store, line)
    reject_release(load_settings(config), releases, name, int(version.removeprefix("v")), who, note)
    Console().print(f"{name} {version}: rejected by {who}")
