"""The release commands: publish, pull, releases list|show|diff, promote, mirror.

Thin shells over `shipyard.registry` (publish, mirror, the ledger); `shipyard.app.cli` registers them.
Every command refuses a store whose root policy is not owned by the pinned keys (`trust.owners`), or whose log
no longer holds the pinned anchor or the head this reader saw last.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shipyard.app.cli.common import (
    ConfigOption,
    JsonOption,
    LineOption,
    RefArgument,
    StoreOption,
    clear_errors,
    err,
    print_json,
)
from shipyard.settings import Settings, load_settings

if TYPE_CHECKING:
    from shipyard.registry.releases import Registry


def open_line(
    config: Path | None, store: str | None, line: str | None, new: bool = False, of_line: bool = True
) -> tuple[Settings, Registry]:
    """The settings and the line's `Registry.open` (pins and anchors checked). Unless `new` (publishing, setting
    a policy) the store must hold a ledger and, for a command about a line (`of_line`), the line must have
    releases: a typo is an error, not an empty table."""
    from shipyard.registry.publish import require_line
    from shipyard.registry.releases import Registry

    settings = load_settings(config)
    registry = Registry.open(settings, store, line, new)
    if not new and of_line:
        require_line(registry.state(), registry.line, registry.store.uri)
    return settings, registry


def _release_row(release: Any, state: Any) -> dict[str, Any]:
    channels = sorted(
        c for (line, c), history in state.channels.items() if line == release.line and history[-1] == release.version
    )
    return {"line": release.line, "version": release.version, "channels": channels, **release.data, "at": release.at}


@clear_errors
def publish_command(
    model: Annotated[Path, typer.Option(help="The candidate directory, with the gate.json that passed it.")],
    ungated: Annotated[bool, typer.Option("--ungated", help="Publish without a passing gate decision.")] = False,
    reason: Annotated[str, typer.Option(help="Why it is published ungated (required with --ungated).")] = "",
    store: StoreOption = None,
    line: LineOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Publish a gated candidate as the next release of a line; publishing it again names the existing release.

    The candidate's gate.json must have passed and name its digest; --ungated --reason TEXT records an exception,
    which the store's policy may keep off protected channels. Trainer pickles are never published.
    """
    from shipyard.errors import ConfigError

    if ungated and not reason.strip():
        raise ConfigError("--ungated needs --reason TEXT: why this release skips the gate")
    settings, registry = open_line(config, store, line, new=True)
    name, releases = registry.line, registry.store
    published = registry.publish(
        model, progress=True, ungated=reason if ungated else None, release_key=settings.trust.release_key
    )
    say_if_open(registry)
    if as_json:
        print_json({"created": published.created, "line": name, "version": published.release.version})
        return
    verb = "published" if published.created else "already released"
    Console().print(f"{verb}: {name} v{published.release.version} in {releases.uri}")


@clear_errors
def pull_command(
    ref: RefArgument,
    out: Annotated[Path, typer.Option(help="Directory to write the release into.")],
    check: Annotated[
        bool,
        typer.Option(
            "--verify", help="Also check its Model Signing bundle and provenance with the policy's release keys."
        ),
    ] = False,
    base: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="A local copy of an earlier release (a directory, or vN as the pipeline keeps it): fetch only what"
            " changed.",
        ),
    ] = None,
    store: StoreOption = None,
    line: LineOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Materialize a release, verifying every file's digest; --verify checks it as a consumer would, and the ledger
    path to it (the pinned root, the anchors, the `released` event, the signed approvals that moved a channel).
    With --from, files the earlier copy holds are kept and changed weights are built from it plus a delta."""
    settings, registry = open_line(config, store, line)
    name = registry.line
    pulled = registry.pull(ref, out, local_copy(base, settings, registry) if base else None)
    release = pulled.release
    held = verified(registry, release, out, registry.state()) if check else []
    if as_json:
        fetched = {"bytes_fetched": pulled.bytes_fetched, "bytes_total": pulled.bytes_total, "files": pulled.how}
        print_json({"line": name, "version": release.version, "path": str(out), "verified": held, **fetched})
        return
    Console().print(f"{name} v{release.version} → {out}")
    if base:
        share = pulled.bytes_fetched / pulled.bytes_total if pulled.bytes_total else 0.0
        Console().print(f"  fetched {pulled.bytes_fetched:,} of {pulled.bytes_total:,} bytes ({share:.1%})")
        for file, how in sorted(pulled.how.items()):
            if how.startswith("fetched: "):
                Console().print(f"  {file}: {how}", highlight=False)
    for line_ in held:
        Console().print(f"  ✓ {line_}", highlight=False, soft_wrap=True)


def local_copy(base: str, settings: Settings, registry: Any) -> Path:
    """`--from`: a directory, or a release (vN, a channel) as the pipeline keeps it in the home."""
    from shipyard.errors import ConfigError

    if Path(base).is_dir():
        return Path(base)
    version = registry.resolve(base).version
    kept = settings.home / "champions" / registry.line / f"v{version}"
    if not kept.is_dir():
        raise ConfigError(f"--from {base}: no such directory, and no copy of v{version} at {kept}; give its directory")
    return kept


def verified(registry: Any, release: Any, out: Path, state: Any) -> list[str]:
    """What `pull --verify` checked: the attestations with the policy's keys, then the ledger path."""
    from shipyard.errors import TrustError
    from shipyard.registry.attest import verify_pulled

    if state.policy is None:
        raise TrustError(f"{registry.store.uri}: no signed policy names a release key; nothing to verify against")
    held = verify_pulled(out, registry.manifest(release), state.policy.release_keys)
    channels = sorted(
        c for (n, c), history in state.channels.items() if n == release.line and release.version in history
    )
    movers = sorted({a["by"] for a in state.approvals.get((release.line, release.version), []) if a["counts"]})
    held.append(
        f"ledger: root owned by {', '.join(state.root)}, anchors held; v{release.version} released at event "
        f"{release.seq}; channels it reached: {', '.join(channels) or 'none'}; signed decisions by "
        f"{', '.join(movers) or 'no one yet'}"
    )
    return held


releases_app = typer.Typer(help="The releases of a line.", no_args_is_help=True)


@releases_app.command("list")
@clear_errors
def releases_list_command(
    store: StoreOption = None, line: LineOption = None, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """List the releases of a line with the channels pointing at them."""
    _, registry = open_line(config, store, line)
    name, releases, state = registry.line, registry.store, registry.state()
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
    ref: RefArgument,
    store: StoreOption = None,
    line: LineOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """A release's manifest: files, lineage, gate decision, eval scores, channels and approvals."""
    _, registry = open_line(config, store, line)
    name, state = registry.line, registry.state()
    release = registry.resolve(ref)
    shown = _release_row(release, state) | {
        "manifest": registry.manifest(release),
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
    _, registry = open_line(config, store, line)
    changes = registry.diff(old, new)
    if as_json:
        print_json(changes)
        return
    Console().print(
        f"v{changes['from']} → v{changes['to']}: files changed: {', '.join(changes['files_changed']) or 'none'}"
    )
    if not changes["score_deltas"]:
        Console().print("eval scores: none that both releases carry")
        return
    table = Table("task", "metric", "delta")
    for task, metrics in changes["score_deltas"].items():
        for metric, delta in metrics.items():
            table.add_row(task, metric, f"{delta:+.3f}")
    Console().print(table)


@clear_errors
def promote_command(
    ref: RefArgument,
    channel: Annotated[str, typer.Option(help="The channel to move.")] = "stable",
    store: StoreOption = None,
    line: LineOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Point a channel at a release: one ledger event, no weights copied.

    The approval channel (stable) moves only for a release with enough approvals: use `shipyard approve`.
    """
    _, registry = open_line(config, store, line)
    registry.promote(ref, channel)
    say_if_open(registry)  # once it moved: a refused move says why in its error
    channel_moved(registry.line, channel, registry.resolve(channel).version, as_json)


def say_if_open(registry: Any) -> None:
    """One line on stderr when the store has no signed policy: anyone who can write to it moves channels."""
    if notice := registry.open_store():
        err.print(f"[yellow]warning:[/] {escape(notice)}", highlight=False, soft_wrap=True)


def channel_moved(line: str, channel: str, version: int, as_json: bool) -> None:
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
    from shipyard.registry.mirror import mirror

    settings, registry = open_line(config, store, line)
    done = mirror(registry.store, registry.line, repo, settings.hub.endpoint)
    if as_json:
        print_json({"repo": repo, "mirrored": done})
        return
    Console().print(f"{repo}: mirrored {', '.join(f'v{v}' for v in done) or 'nothing new'}")
