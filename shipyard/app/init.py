"""`shipyard init`: everything a real run needs, in one directory, from a few answers.

From the run's source, the base model, the store, the line and the approvers it writes:

- `shipyard.yaml`, with a comment on every setting and DECIDE on those a user must choose;
- a recipe, a gate policy and suites copied from the built-in ones (`shipyard.app.starter`);
- keys: the store's owner (`keys/owner.key`: keep it offline afterwards), each approver init makes a key
  for, the pipeline's (signs gate verdicts), the publisher's (signs releases) and the doors' (dashboard,
  Prefect form); an approver who gives a public key of their own keeps their private key to themselves;
- `policy.yaml`, signed into the store as its first policy, with the owners pinned in the config;
- a dashboard login per approver (`tokens/<name>.token`; only its hash goes into the config).

Nothing is overwritten: every file is checked first, and a store that already has a ledger is refused
(its owners add people; `shipyard trust pin` joins it). Called by `shipyard init`.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from shipyard.app.dashboard.auth import new_token
from shipyard.app.starter import Starter, planned, write_starter
from shipyard.errors import ConfigError
from shipyard.profiles import installed

CONFIG = "shipyard.yaml"
POLICY = "policy.yaml"
DOORS = ("dashboard", "prefect-ui")
PIPELINE = "pipeline"  # the release flow's key: signs gate verdicts
if TYPE_CHECKING:
    from shipyard.registry.stores import Store

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Answers:
    """What `shipyard init` asks; each is also a flag."""

    source: str
    directory: Path = Path(".")
    base_model: Path | None = None
    store: str | None = None  # a path (relative to the working directory) or s3://…; None: <directory>/releases
    line: str = "main"
    approvers: dict[str, Path | None] = field(default_factory=dict)  # name -> a public key file; None: made here
    required: int = 1
    every_n_steps: int = 1
    profile: str = "demo"  # whose recipe, gate policy and suites are copied
    detected: list[str] = field(default_factory=list)  # what `frameworks.detect` said, for the config's header


@dataclass(frozen=True)
class Initialized:
    config: Path
    owners: list[str]
    you: str | None  # the approver whose key trust.key names
    tokens: dict[str, Path]
    files: list[Path]  # every file written, relative to the directory


def check(answers: Answers) -> None:
    """Every answer is usable, before anything is written."""
    if not answers.approvers:
        raise ConfigError("no approvers: name at least one (--approver NAME, or NAME=THEIR_KEY.pub)")
    for name, key in answers.approvers.items():
        if not NAME.match(name):
            raise ConfigError(f"approver {name!r}: a name is letters, digits, '.', '_' and '-'")
        if key is not None and not key.is_file():
            raise ConfigError(f"approver {name}: {key}: no such public key file")
    if not 1 <= answers.required <= len(answers.approvers):
        raise ConfigError(
            f"--required {answers.required}: stable needs between 1 and {len(answers.approvers)} approvals"
            f" ({len(answers.approvers)} approver(s) named)"
        )
    if not NAME.match(answers.line):
        raise ConfigError(f"line {answers.line!r}: a line's name is letters, digits, '.', '_' and '-'")
    if answers.base_model is not None and not (answers.base_model / "config.json").is_file():
        raise ConfigError(f"{answers.base_model}: no config.json there; the base model is a local model directory")
    if answers.profile not in installed():
        raise ConfigError(f"profile {answers.profile!r} is not installed; installed: {', '.join(installed())}")


def planned_files(answers: Answers) -> list[Path]:
    """Every file init writes, relative to the directory."""
    keys = [
        "owner.key",
        f"{PIPELINE}.key",
        *(f"{door}.key" for door in DOORS),
        *(f"{n}.key" for n in answers.approvers),
    ]
    made = [Path("keys") / k for k in keys] + [Path("keys") / f"{k}.pub" for k in keys]
    made += [Path("keys/release.key"), Path("keys/release.key.pub")]
    made += [Path("tokens") / f"{name}.token" for name in answers.approvers]
    return [Path(CONFIG), Path(POLICY), *sorted([*made, *planned(installed()[answers.profile])])]


def initialize(answers: Answers, s3_endpoint: str | None = None, hub_endpoint: str | None = None) -> Initialized:
    """Write the directory and sign the policy into the store; refuses before writing anything that exists.

    The endpoints (of an S3-compatible store, of a Hub mirror) come from the environment init runs in; the
    config keeps the one its source or store uses."""
    from shipyard.registry.ledger import EVENTS
    from shipyard.registry.stores import open_store

    check(answers)
    d = answers.directory
    if clash := [str(d / f) for f in planned_files(answers) if (d / f).exists() or (d / f).is_symlink()]:
        raise ConfigError(f"refusing to overwrite {len(clash)} file(s): {', '.join(clash[:5])}; choose another --dir")
    store = open_store(_store(answers), s3_endpoint)
    if next(iter(store.keys(EVENTS)), None) is not None:
        raise ConfigError(
            f"{store.uri}: already a release store; init makes a new one. To read this one, get its owners'"
            " fingerprints from them and run `shipyard trust pin`; to approve in it, ask them to add your key"
        )
    d.mkdir(parents=True, exist_ok=True)
    starter = write_starter(installed()[answers.profile], d, f"the {answers.profile} profile")
    owners, you = _protect(answers, store)
    tokens: dict[str, Path] = {}
    hashes: dict[str, str] = {}
    for name in answers.approvers:
        token, hashes[name] = new_token()
        tokens[name] = d / "tokens" / f"{name}.token"
        tokens[name].parent.mkdir(exist_ok=True)
        tokens[name].touch(mode=0o600)
        tokens[name].write_text(token + "\n")
    config = d / CONFIG
    endpoints: dict[str, tuple[str, str]] = {}
    if s3_endpoint and any(where.startswith("s3://") for where in (answers.source, _store(answers))):
        endpoints["s3"] = ("endpoint_url", s3_endpoint)
    if hub_endpoint and answers.source.startswith("hf://"):
        endpoints["hub"] = ("endpoint", hub_endpoint)
    config.write_text(config_text(answers, starter, owners, you, hashes, endpoints))
    return Initialized(config, owners, you, tokens, planned_files(answers))


def _protect(answers: Answers, store: Store) -> tuple[list[str], str | None]:
    """Make the keys, write the approval policy and sign it into the store; the owners' fingerprints, and who
    `trust.key` is (the first approver init made a key for, or who gave a key with its private half beside it)."""
    from shipyard.registry.approval_policy import load_approval_policy
    from shipyard.registry.attest import keygen_ec
    from shipyard.registry.signing import fingerprint, keygen
    from shipyard.registry.trust import set_policy

    keys = answers.directory / "keys"
    owner = keygen(keys / "owner.key", "shipyard-owner")
    for name in (PIPELINE, *DOORS):
        keygen(keys / f"{name}.key", name)
    keygen_ec(keys / "release.key")
    you = None
    for name, public in answers.approvers.items():
        if public is None:
            keygen(keys / f"{name}.key", name)
            you = you or name
        else:
            shutil.copyfile(public, keys / f"{name}.key.pub")
            if you is None and public.with_suffix("").is_file() and public.suffix == ".pub":
                you = name
    policy = {
        "approvers": {name: [f"keys/{name}.key.pub"] for name in answers.approvers},
        "channels": {"stable": {"required": answers.required}},
        "veto": True,
        "doors": {door: {"key": f"keys/{door}.key.pub", "attests": list(answers.approvers)} for door in DOORS},
        "gate": [f"keys/{PIPELINE}.key.pub"],
        "release_keys": ["keys/release.key.pub"],
    }
    header = (
        "# Who may move `stable` in this store: written by `shipyard init` and signed into the store by the owner\n"
        "# key. To change it, edit this file and sign it again: shipyard policy set policy.yaml --key keys/owner.key\n"
    )
    policy_file = answers.directory / POLICY
    policy_file.write_text(header + yaml.safe_dump(policy, sort_keys=False))
    set_policy(store, load_approval_policy(policy_file, owners=[owner]), [keys / "owner.key"])
    return [fingerprint(owner)], you


def _store(answers: Answers) -> str:
    return answers.store or str(answers.directory / "releases")


def _in_config(answers: Answers, where: str) -> str:
    """A path or URI as the config names it: a path relative to the config's directory (as it is read)."""
    if "://" in where:
        return where
    return os.path.relpath(Path(where).resolve(), answers.directory.resolve())


def _key_of(answers: Answers, name: str | None) -> str | None:
    if name is None:
        return None
    public = answers.approvers[name]
    return f"keys/{name}.key" if public is None else str(public.with_suffix("").resolve())


def config_text(
    answers: Answers,
    starter: Starter,
    owners: list[str],
    you: str | None,
    tokens: dict[str, str],
    endpoints: dict[str, tuple[str, str]] | None = None,
) -> str:
    """The settings file, every value with its comment."""
    data = CommentedMap()
    _put(data, "home", ".shipyard", "caches and state: a disk with room for a few checkpoints (cache.* budgets)")
    data["watch"] = watch = CommentedMap()
    _put(watch, "source", _in_config(answers, answers.source), "the run: a path, s3://bucket/prefix or hf://org/name")
    _put(watch, "every_n_steps", answers.every_n_steps, "DECIDE: take only steps that are multiples of this")
    if answers.base_model is not None:
        data["convert"] = convert = CommentedMap()
        why = "config and tokenizer of checkpoints that hold none (else the run's), and the base of LoRA adapters"
        _put(convert, "base_model", str(answers.base_model.resolve()), why)
    for section, (name, url) in (endpoints or {}).items():
        data[section] = CommentedMap()
        _put(data[section], name, url, "from the environment init ran in: a compatible service, not the default")
    data["pipeline"] = pipeline = CommentedMap()
    _put(pipeline, "recipe", str(starter.recipe), "DECIDE: your post-training (a copy of the demo's; see its DECIDEs)")
    _put(pipeline, "policy", str(starter.policy), "DECIDE: your release gate (a copy of the demo's)")
    _put(pipeline, "screening_suite", str(starter.screening_suite), "DECIDE: the suite a raw checkpoint is screened on")
    _put(pipeline, "screening_task", starter.screening_task, "DECIDE: the task of that suite it is screened on")
    data["release"] = release = CommentedMap()
    _put(release, "store", _in_config(answers, _store(answers)), "signed policy in force; owners pinned below")
    _put(release, "line", answers.line, "versions are counted per line")
    data["trust"] = trust = CommentedMap()
    _put(trust, "owners", _flow(owners), "the store's owners, pinned: a store owned by other keys is refused")
    if key := _key_of(answers, you):
        _put(trust, "key", key, f"{you}'s signing key, for shipyard approve/reject/rollback")
    _put(trust, "gate_key", f"keys/{PIPELINE}.key", "the pipeline's: signs each gate verdict (the policy's gate)")
    _put(trust, "release_key", "keys/release.key", "the publisher's: signs each release (the policy's release_keys)")
    doors = CommentedMap((door, f"keys/{door}.key") for door in DOORS)
    doors.fa.set_flow_style()
    _put(trust, "door_keys", doors, "the doors' keys: they sign for the approvers they authenticated")
    data["dashboard"] = dashboard = CommentedMap()
    hashes = CommentedMap(tokens)
    _put(dashboard, "tokens", hashes, "logins, hashes only: tokens/<name>.token holds each token; hand it over")
    out = io.StringIO()
    writer = YAML()
    writer.width = 4096
    writer.dump(data, out)
    detected = "".join(f"# {line}\n" for line in answers.detected)
    return (
        f"# Written by `shipyard init` on {date.today()} for {answers.source}; commands run here read it.\n"
        f"{detected}"
        "# Every setting: shipyard.example.yaml and docs/reference.md. DECIDE marks what you must choose.\n"
        + out.getvalue()
    )


def _put(section: CommentedMap, key: str, value: object, comment: str) -> None:
    section[key] = value
    section.yaml_add_eol_comment(comment, key, column=0)


def _flow(items: list[str]) -> CommentedSeq:
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq
