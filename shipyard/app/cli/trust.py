"""The trust commands: keygen, policy set|show, approve, reject, rollback, ledger head|verify.

Thin shells over `shipyard.registry.signing`, `shipyard.registry.trust`, `shipyard.registry.approvals`
and `shipyard.registry.doors`; `shipyard.app.cli` registers them. A decision is signed with
the person's own key (`--key`, or `trust.key`); who they are comes from the
store's policy, never from a flag.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

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
from shipyard.app.cli.releases import channel_moved, open_line, say_if_open
from shipyard.events import Decision, EventType
from shipyard.settings import Settings, load_settings

if TYPE_CHECKING:
    from shipyard.registry.approvals import Signer
    from shipyard.registry.stores import Store

KeyOption = Annotated[Path | None, typer.Option("--key", help="Your private signing key (default: trust.key).")]
AsOption = Annotated[str | None, typer.Option("--as", help="Who you are; checked against your key's owner.")]


@clear_errors
def keygen_command(
    out: Annotated[Path, typer.Argument(help="Where to write the private key (the public one goes to OUT.pub).")],
    comment: Annotated[str, typer.Option(help="A name for the key, e.g. you@lab.")] = "",
    ec: Annotated[
        bool, typer.Option("--ec", help="A P-256 release-signing key (PEM), as Model Signing takes, for release_keys.")
    ] = False,
) -> None:
    """Make an Ed25519 signing key (OpenSSH format; an existing ssh-keygen key works as well), or with --ec a
    release-signing key for the publisher (trust.release_key; its .pub goes into the policy's release_keys)."""
    if ec:
        from shipyard.registry.attest import key_id, keygen_ec

        pem = keygen_ec(out)
        print(f"{out} (private, keep it)\n{out}.pub: release key {key_id(pem)}")
        return
    from shipyard.registry.signing import fingerprint, keygen

    line = keygen(out, comment)
    print(f"{out} (private, keep it)\n{out}.pub: {line}\nfingerprint: {fingerprint(line)}")  # never wrapped: pasted


policy_app = typer.Typer(help="The store's signed approval policy.", no_args_is_help=True)


@policy_app.command("set")
@clear_errors
def policy_set_command(
    policy_file: Annotated[
        Path, typer.Argument(help="Approval policy YAML: approvers, channels, veto, doors (owners).")
    ],
    key: Annotated[list[Path], typer.Option("--key", help="An owner's private key; repeat for a threshold.")],
    create_key: Annotated[bool, typer.Option(help="Make the owner key first if it does not exist.")] = False,
    store: StoreOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sign and write the store's approval policy; the first one makes its signers the store's owners.

    An existing store keeps its history, readable as before; from then on only signed decisions count.
    """
    from shipyard.registry.approval_policy import load_approval_policy
    from shipyard.registry.signing import keygen, load_private, public_line
    from shipyard.registry.trust import set_policy

    if create_key and len(key) == 1 and not key[0].exists():
        keygen(key[0], "shipyard-owner")
    owners = [public_line(load_private(k).public_key()) for k in key]
    policy = load_approval_policy(policy_file, owners=owners)
    releases = open_line(config, store, None, new=True)[1].store
    event = set_policy(releases, policy, key)
    shown = {"store": releases.uri, "policy_version": event.data["policy"]["version"], "seq": event.seq}
    shown |= {"owners": policy.owner_fingerprints()}
    if as_json:
        print_json(shown)
        return
    pins = json.dumps(policy.owner_fingerprints())
    print(f"{releases.uri}: policy v{shown['policy_version']} in force (event {event.seq})")
    print("pin its owners in every reader's settings (shipyard.yaml, or the environment):")
    print(f"trust: {{owners: {pins}}}")  # plain print: a terminal's width never wraps a line to paste
    print(f"SHIPYARD_TRUST__OWNERS='{pins}'")


@policy_app.command("show")
@clear_errors
def policy_show_command(store: StoreOption = None, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The policy in force: owners, approvers and their keys, channels, veto, doors."""
    from shipyard.registry.attest import key_id
    from shipyard.registry.signing import fingerprint

    registry = open_line(config, store, None, of_line=False)[1]
    releases, state = registry.store, registry.state()
    if state.policy is None:
        shown: dict[str, Any] = {"store": releases.uri, "policy": None}
    else:
        p = state.policy
        shown = {
            "store": releases.uri,
            "version": p.version,
            "root": state.root,
            "owners": p.owner_fingerprints(),
            "threshold": p.threshold,
            "approvers": {who: [fingerprint(k) for k in keys] for who, keys in p.approvers.items()},
            "channels": {c: r.model_dump() for c, r in p.channels.items()},
            "veto": p.veto,
            "doors": {
                d: {"key": fingerprint(r.key), "attests": r.attests, "several": r.several} for d, r in p.doors.items()
            },
            "gate": [fingerprint(k) for k in p.gate],
            "release_keys": [key_id(k) for k in p.release_keys],
            "signature_days": p.signature_days,
        }
    if as_json:
        print_json(shown)
        return
    if state.policy is None:
        Console().print(f"{releases.uri}: no signed policy (shipyard policy set POLICY --key OWNER_KEY)")
        return
    Console().print_json(data=shown)


def _door(
    config: Path | None, store: str | None, line: str | None, ref: str, key: Path | None, who: str | None
) -> tuple[Settings, Store, str, int, Signer]:
    """What a decision needs: settings, the checked store, the line, the version, and the signer; shows the verdict."""
    from shipyard.registry.evidence import evidence
    from shipyard.registry.publish import resolve
    from shipyard.registry.trust import cli_signer

    settings, registry = open_line(config, store, line)
    releases, name, state = registry.store, registry.line, registry.state()
    number = resolve(state, name, ref).version
    signer = cli_signer(settings, state, key, who)
    verdict = next((ln for ln in evidence(releases, name, number).splitlines() if ln.startswith("- gate:")), "")
    err.print(f"{name} v{number} {verdict.removeprefix('- ')}", highlight=False, soft_wrap=True)
    return settings, releases, name, number, signer


@clear_errors
def approve_command(
    ref: RefArgument,
    key: KeyOption = None,
    who: AsOption = None,
    note: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    store: StoreOption = None,
    line: LineOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Approve a release, signed with your key; with the approvals the policy asks for it moves to stable.

    The gate verdict is shown first. A Prefect approval run waiting for this release is woken to read it.
    """
    from shipyard.orchestration.waking import decide_and_wake
    from shipyard.registry.releases import Registry

    settings, releases, name, number, signer = _door(config, store, line, ref, key, who)
    events = decide_and_wake(settings, releases, name, number, Decision.APPROVE, signer, note)
    promoted = any(e.type == EventType.PROMOTED for e in events)
    channel = settings.approval.channel
    waits = "" if promoted else Registry.of(releases, settings, name).waiting(str(number), channel)
    if as_json:
        done = {"line": name, "version": number, "approved_by": signer.who, "promoted": promoted, "waiting": waits}
        print_json(done)
        return
    moved = f"; promoted to {channel}" if promoted else f"; {channel} still waits: {waits}" if waits else ""
    Console().print(f"{name} v{number}: approved by {signer.who}{moved}", highlight=False, soft_wrap=True)


@clear_errors
def reject_command(
    ref: RefArgument,
    note: Annotated[str, typer.Option(help="Why (required).")] = "",
    key: KeyOption = None,
    who: AsOption = None,
    store: StoreOption = None,
    line: LineOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Reject a release, signed, with a note saying why; by default a rejection is a veto."""
    from shipyard.orchestration.waking import decide_and_wake

    settings, releases, name, number, signer = _door(config, store, line, ref, key, who)
    decide_and_wake(settings, releases, name, number, Decision.REJECT, signer, note)
    if as_json:
        print_json({"line": name, "version": number, "rejected_by": signer.who})
        return
    Console().print(f"{name} v{number}: rejected by {signer.who}")


@clear_errors
def rollback_command(
    channel: Annotated[str, typer.Option(help="The channel to move back.")] = "stable",
    key: KeyOption = None,
    note: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    store: StoreOption = None,
    line: LineOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move a channel back to the release it pointed at before, in one step; a protected channel needs --key."""
    from shipyard.registry.trust import cli_signer

    settings, registry = open_line(config, store, line)
    state = registry.state()
    protected = state.policy is not None and channel in state.policy.channels
    signer = cli_signer(settings, state, key, None) if protected or key else None
    registry.rollback(channel, signer, note)
    say_if_open(registry)
    channel_moved(registry.line, channel, registry.resolve(channel).version, as_json)


trust_app = typer.Typer(help="What this reader trusts.", no_args_is_help=True)


@trust_app.command("pin")
@clear_errors
def trust_pin_command(
    yes: Annotated[bool, typer.Option("--yes", help="Pin without asking (you checked the fingerprints).")] = False,
    store: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    """Show who owns the store (its root policy's owner keys) and, once you confirm, pin them in your settings
    file (trust.owners): trust on first use, said out loud. Check the fingerprints with the owners first, out of
    band; from then on a store whose root differs is refused."""
    from shipyard.errors import ConfigError, TrustError
    from shipyard.registry.approvals import PROTECT
    from shipyard.registry.releases import Registry
    from shipyard.registry.signing import fingerprint
    from shipyard.registry.stores import release_store
    from shipyard.registry.trust import check_anchors
    from shipyard.settings import DEFAULT_CONFIG, config_file

    settings = load_settings(config)
    releases = release_store(settings, store)
    state = Registry.of(releases, settings).state()  # read before any pin: what it shows is for a person to check
    if not state.root:
        raise ConfigError(f"{releases.uri}: no signed policy, so no owners to pin (an open store); {PROTECT}")
    pinned = settings.trust.owners
    if pinned and set(state.root) <= set(pinned):
        print(f"{releases.uri}: its owners are pinned already")
        return
    if pinned:
        raise TrustError(
            f"{releases.uri}: owned by {', '.join(state.root)}, but this reader pins {', '.join(pinned)}; a pin is"
            " changed by hand, after asking the owners why the store changed hands"
        )
    names = {fingerprint(k): " ".join(k.split()[2:]) for k in (state.policy.owners if state.policy else [])}
    path = config_file(config) or DEFAULT_CONFIG
    print(f"{releases.uri} is owned by:")
    for fp in state.root:
        print(f"  {fp}  {names.get(fp, '')}".rstrip())
    if not yes:
        typer.confirm(f"Pin these owners in {path}?", abort=True)
    pin_owners(path, state.root)
    check_anchors(releases, load_settings(path), state)  # this reader now remembers the head it pinned at
    print(f"pinned in {path}: trust.owners = {json.dumps(state.root)}")


def pin_owners(path: Path, owners: list[str]) -> None:
    """Set trust.owners in the YAML settings file at `path` (made if missing), keeping its comments and order."""
    from ruamel.yaml import YAML

    from shipyard.errors import ConfigError

    yaml = YAML()  # round trip: the user's comments stay
    data = yaml.load(path.read_text()) if path.is_file() else None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a YAML mapping of settings")
    trust = data.setdefault("trust", {})
    if not isinstance(trust, dict):
        raise ConfigError(f"{path}: trust is not a mapping")
    trust["owners"] = list(owners)
    with path.open("w") as out:
        yaml.dump(data, out)


ledger_app = typer.Typer(help="The release ledger.", no_args_is_help=True)


@ledger_app.command("head")
@clear_errors
def ledger_head_command(store: StoreOption = None, config: ConfigOption = None) -> None:
    """Print SEQ:DIGEST of the newest event: keep it outside the store and check it later with verify --anchor."""
    from shipyard.registry.trust import head

    print(head(open_line(config, store, None, of_line=False)[1].state()))


@ledger_app.command("verify")
@clear_errors
def ledger_verify_command(
    deep: Annotated[bool, typer.Option(help="Re-hash every blob a release names.")] = False,
    anchor: Annotated[
        str | None, typer.Option(help="SEQ:DIGEST from `ledger head` (default: trust.anchor); the log must hold it.")
    ] = None,
    store: StoreOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check the chain, the policy, every signed decision and every blob; the log against anchors kept outside.

    Exit 1 on any problem: each names the event (by seq) or the blob.
    """
    from shipyard.errors import NotFound
    from shipyard.registry.ledger import EVENTS, PACKS
    from shipyard.registry.publish import verify
    from shipyard.registry.releases import Registry
    from shipyard.registry.stores import release_store
    from shipyard.registry.trust import anchor_problems, check_remembered

    settings = load_settings(config)
    releases = release_store(settings, store)  # unchecked: verify reports what a checked open would refuse
    if not any(next(iter(releases.keys(prefix)), None) for prefix in (EVENTS, PACKS)):  # unfolded: verify reports
        raise NotFound(f"{releases.uri}: no release store here (no ledger); check --store or release.store")
    problems = verify(releases, deep, settings.trust.owners, settings.trust.allow_unpinned)
    if anchor or settings.trust.anchor:
        problems += anchor_problems(releases, anchor or settings.trust.anchor or "")
    problems += check_remembered(settings.home, releases)
    if not problems and (notice := Registry.of(releases, settings).open_store()):
        err.print(f"warning: {notice}", highlight=False, soft_wrap=True, markup=False)
    if as_json:
        print_json({"store": releases.uri, "problems": problems})
    else:
        for problem in problems:
            err.print(problem, style="red", highlight=False, soft_wrap=True, markup=False)
        Console().print(f"{releases.uri}: {'sound' if not problems else f'{len(problems)} problem(s)'}")
    raise typer.Exit(1 if problems else 0)
