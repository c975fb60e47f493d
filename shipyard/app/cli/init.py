"""`shipyard init`: set up a directory for a real run; a thin shell over `shipyard.app.init`."""

from __future__ import annotations

import getpass
import re
import sys
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any

import typer

from shipyard.app.cli.common import JsonOption, clear_errors, print_json
from shipyard.errors import ConfigError
from shipyard.settings import Settings, load_settings

if TYPE_CHECKING:
    from shipyard.app.init import Answers


@clear_errors
def init_command(
    source: Annotated[
        str | None, typer.Option(help="The run: a path, s3://bucket/prefix or hf://org/name.", show_default=False)
    ] = None,
    base_model: Annotated[
        Path | None,
        typer.Option(help="A local model directory: config and tokenizer for checkpoints without them, LoRA's base."),
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="The release store: a path or s3://bucket/prefix (default: DIR/releases).")
    ] = None,
    line: Annotated[str | None, typer.Option(help="The release line (default: the run's name).")] = None,
    approver: Annotated[
        list[str] | None,
        typer.Option(help="NAME (init makes their key) or NAME=THEIR_KEY.pub; repeat for each approver."),
    ] = None,
    required: Annotated[int | None, typer.Option(help="Approvals stable needs (default 1).")] = None,
    every_n_steps: Annotated[
        int | None, typer.Option(help="Take only steps that are multiples of this (default: the run's interval).")
    ] = None,
    directory: Annotated[Path, typer.Option("--dir", help="Where to write (made if missing).")] = Path("."),
    interactive: Annotated[
        bool | None,
        typer.Option("--interactive/--no-interactive", help="Ask for what no flag gives (default: on a terminal)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Set up a directory for your run: config, a starting recipe, gate policy and suites (copies of the demo's,
    DECIDE marking what is yours to choose), keys, the signed approval policy with its owners pinned, and a
    dashboard login per approver. Then checks the machine and lists the run. Never overwrites a file."""
    from shipyard.app.init import initialize

    ask = sys.stdin.isatty() if interactive is None else interactive
    say = _Say(as_json)
    env = load_settings()
    answers, framework = _answers(
        env, ask, say, source, base_model, store, line, approver or [], required, every_n_steps, directory
    )
    done = initialize(answers, env.s3.endpoint_url, env.hub.endpoint)
    shown: dict[str, Any] = {"directory": str(directory), "config": str(done.config), "owners": done.owners}
    shown |= {"framework": framework, "files": [str(f) for f in done.files]}
    say(f"wrote {len(done.files)} files under {directory}: {done.config.name}, policy.yaml (signed into the store)")
    say(f"owners pinned: {', '.join(done.owners)} (keys/owner.key signs policy changes: keep it offline)")
    for who, token in done.tokens.items():
        say(f"dashboard login of {who}: {token} (hand it over; only its hash is in the config)")
    shown |= _after(done.config, say)
    cd = "" if directory == Path(".") else f"cd {directory} && "
    say(f"next: grep -rn DECIDE {directory} (choose those), then {cd}shipyard checkpoints --validate")
    if as_json:
        print_json(shown)


def _answers(
    env: Settings,
    ask: bool,
    say: _Say,
    source: str | None,
    base_model: Path | None,
    store: str | None,
    line: str | None,
    approver: list[str],
    required: int | None,
    every_n_steps: int | None,
    directory: Path,
) -> tuple[Answers, str]:
    """The flags, with what they leave out asked for (on a terminal) or defaulted; says what the run holds."""
    from shipyard.app.init import Answers
    from shipyard.intake.frameworks import detect
    from shipyard.intake.layouts import run_config
    from shipyard.intake.scan import list_run
    from shipyard.intake.sources import open_source

    source = source or (typer.prompt("Your run: a path, s3://bucket/prefix or hf://org/name") if ask else None)
    if not source:
        raise ConfigError("no run: give --source (a path, s3://bucket/prefix or hf://org/name)")
    listing = list_run(open_source(source, env.s3, env.hub))
    found = list(listing.found.values())
    detected = detect(found)
    say(f"run: {source}")
    for text in detected.lines():
        say(f"  {text}")
    if base_model is None and ask:
        why = "config.json and tokenizer, for checkpoints without them and as LoRA's base; empty: none"
        base_model = Path(answer) if (answer := typer.prompt(f"Base model directory ({why})", default="")) else None
    bare = [f for f in found if f.format not in ("hf", "command") and not f.hf_files]
    if bare and base_model is None and run_config(listing.files, bare[0], found) is None:
        say(f"  warning: {len(bare)} checkpoint(s) hold no config.json and the run has none: give --base-model")
    if detected.needs_command:
        say("  warning: Megatron weights need a converter: set convert.command (docs/intake.md)")
    if store is None and ask:
        store = typer.prompt("Release store (a path or s3://bucket/prefix)", default=str(directory / "releases"))
    line = line or (typer.prompt("Release line", default=_name(source)) if ask else _name(source))
    if not approver:
        question = "Approvers (comma-separated; NAME=KEY.pub for one with a key of their own)"
        people = typer.prompt(question, default=getpass.getuser()) if ask else getpass.getuser()
        approver = [p.strip() for p in people.split(",") if p.strip()]
    approvers = {n: (Path(k) if k else None) for n, _, k in (a.partition("=") for a in approver)}
    if required is None:
        required = typer.prompt("Approvals stable needs", default=1, type=int) if ask and len(approvers) > 1 else 1
    answers = Answers(
        source=source,
        directory=directory,
        base_model=base_model,
        store=store,
        line=line,
        approvers=approvers,
        required=required,
        every_n_steps=every_n_steps or detected.interval or 1,
        detected=[f"The run: {text}" for text in detected.lines()[:1]],
    )
    return answers, detected.framework


def _after(config: Path, say: _Say) -> dict[str, Any]:
    """`doctor` and `checkpoints` on the new settings, summed up."""
    from shipyard.app.doctor import FAIL, diagnose
    from shipyard.intake.scan import list_run
    from shipyard.intake.sources import open_source

    settings = load_settings(config)
    checks = diagnose(settings)
    counts = {status: sum(c.status == status for c in checks) for status in ("ok", "warn", "fail")}
    say("doctor: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    for c in checks:
        if c.status == FAIL:
            say(f"  fail: {c.name}: {c.detail}")
    assert settings.watch.source is not None
    listed = list_run(open_source(settings.watch.source, settings.s3, settings.hub)).checkpoints()
    states = {state: sum(c.state == state for c in listed) for state in sorted({c.state for c in listed})}
    taken = sum(c.step % settings.watch.every_n_steps == 0 for c in listed)
    say(
        f"checkpoints: {len(listed)} ({', '.join(f'{n} {s}' for s, n in states.items()) or 'none yet'}), {taken} on"
        f" every_n_steps={settings.watch.every_n_steps}"
    )
    return {"doctor": [c.as_dict() for c in checks], "checkpoints": states}


class _Say:
    """Lines for a person (on stdout, or on stderr under --json); never wrapped: some are pasted."""

    def __init__(self, as_json: bool) -> None:
        self.out = sys.stderr if as_json else sys.stdout

    def __call__(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def _name(source: str) -> str:
    """A line name from the run's last path component."""
    last = PurePosixPath(source.rstrip("/").split("://")[-1].split("@")[0]).name
    return re.sub(r"[^A-Za-z0-9._-]", "-", last).lstrip("._-") or "main"
