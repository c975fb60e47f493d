"""`shipyard demo`: the embedded default end to end, everything kept under one directory.

The directory gets its own `shipyard.yaml` (so the CLI run inside it finds
the run, the release store and the approvers with no flags), the RL run
(`run/`), the release store (`releases/`), Shipyard's home (`.shipyard/`) and
the Prefect home (`prefect/`, ephemeral API: every flow run is kept there).
The demo RL run trains in a child process while the watch flow polls it; the
policy takes every 20th step (the others are turned away with that reason) and
each taken checkpoint goes through the release flow; the first release is
approved by a demo identity (it becomes the champion the later ones must beat);
later releases are left pending. The store is protected from the start: the
demo makes an owner key, a key for the demo approver and for `you`, and keys
for the dashboard and Prefect-form doors (all under `keys/`, `you.key` beside
the config), signs `policy.yaml` into the store, and pins the owner in the
config. A real deployment keeps the owner key offline. Called by the CLI; Prefect is imported only
after the Prefect home is set.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shipyard.app.dashboard.auth import new_token
from shipyard.demo.errors import DemoRunError
from shipyard.evals.screening import budget
from shipyard.events import EventType
from shipyard.orchestration.heartbeat import Heartbeat
from shipyard.settings import Settings, ephemeral_prefect_defaults, load_settings

DEMO_APPROVER = "demo-approver"
YOU = "you"
FATES = (EventType.SKIPPED, EventType.GATE_FAILED, EventType.REFUSED)
TOKEN_FILE = "you.token"
KEY_FILE = "you.key"
DOORS = ("dashboard", "prefect-ui")
PIPELINE = "pipeline"  # the release flow's own key: it signs gate verdicts
RELEASE_KEY = "release.key"  # the publisher's EC key: Model Signing bundle and provenance of every release
CONFIG = {
    "profile": "demo",
    "home": ".shipyard",
    "demo": {"out": "run", "steps": 100, "save_every": 10},
    "watch": {"source": "run", "every_n_steps": 20, "newest_first": False},
    "release": {"store": "releases"},
    "approval": {"wait_seconds": 600},
    "dashboard": {"open_read": True},
}
DCP_CONFIG = {
    "demo": {**CONFIG["demo"], "format": "dcp"},  # type: ignore[dict-item]
    "watch": {**CONFIG["watch"], "source": "run/dcp"},  # type: ignore[dict-item]
    "convert": {"base_model": "run/warm-start"},
}
POLICY = {
    "approvers": {DEMO_APPROVER: [f"keys/{DEMO_APPROVER}.key.pub"], YOU: [f"{KEY_FILE}.pub"]},
    "channels": {"stable": {"required": 1}},
    "veto": True,
    "doors": {door: {"key": f"keys/{door}.key.pub", "attests": [YOU]} for door in DOORS},
    "gate": [f"keys/{PIPELINE}.key.pub"],  # the pipeline signs each gate verdict with its own key
    "release_keys": [f"keys/{RELEASE_KEY}.pub"],  # and each release, for consumers (Model Signing, provenance)
}


@dataclass
class DemoReport:
    directory: Path
    approved: list[int] = field(default_factory=list)
    seconds: float = 0.0


def prepare(directory: Path, fmt: str = "hf") -> Path:
    """Create the demo directory with its config (kept if present) and point Prefect's home into it.

    With `fmt` "dcp" the run also saves each checkpoint as torch DCP, and the watcher takes those: converted
    to a model (config and tokenizer from the run's warm start) before anything else sees them.
    """
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "shipyard.yaml"
    if not config.exists():
        token, digest = new_token()  # the door login of `you`; only its hash goes into the config
        token_file = directory / TOKEN_FILE
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        owners = _protect(directory)
        trust = {"owners": owners, "key": KEY_FILE, "door_keys": {d: f"keys/{d}.key" for d in DOORS}}
        trust |= {"gate_key": f"keys/{PIPELINE}.key", "release_key": f"keys/{RELEASE_KEY}"}
        dashboard = {**CONFIG["dashboard"], "tokens": {YOU: digest}}  # type: ignore[dict-item]
        settings = {**CONFIG, "dashboard": dashboard, "trust": trust}
        if fmt == "dcp":
            settings |= DCP_CONFIG
        header = "# Written by `shipyard demo`; the CLI run in this directory reads it.\n"
        config.write_text(header + yaml.safe_dump(settings, sort_keys=False))
    os.environ.setdefault("PREFECT_HOME", str((directory / "prefect").resolve()))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    ephemeral_prefect_defaults()
    return config


def _protect(directory: Path) -> list[str]:
    """Make the demo's keys and sign its policy into the store; the owner fingerprints to pin."""
    from shipyard.registry.approval_policy import load_approval_policy
    from shipyard.registry.attest import keygen_ec
    from shipyard.registry.signing import fingerprint, keygen
    from shipyard.registry.stores import open_store
    from shipyard.registry.trust import set_policy

    keys = directory / "keys"
    owner = keygen(keys / "owner.key", "demo-owner")
    for name in (DEMO_APPROVER, *DOORS, PIPELINE):
        keygen(keys / f"{name}.key", name)
    keygen(directory / KEY_FILE, YOU)
    keygen_ec(keys / RELEASE_KEY)
    policy_file = directory / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(POLICY, sort_keys=False))
    policy = load_approval_policy(policy_file, owners=[owner])
    set_policy(open_store(str(directory / str(CONFIG["release"]["store"]))), policy, [keys / "owner.key"])  # type: ignore[index]
    return [fingerprint(owner)]


def run(directory: Path, say: Callable[[str], None], poll_seconds: float = 3.0, fmt: str = "hf") -> DemoReport:
    """Run the demo inside `directory` (the working directory while it runs); `fmt` as for `prepare`."""
    started = time.monotonic()
    directory = directory.resolve()  # before the chdir below: a relative path means the caller's directory
    prepare(directory, fmt)
    here = Path.cwd()
    os.chdir(directory)
    try:
        settings = load_settings(Path("shipyard.yaml"))
        report = DemoReport(directory)
        with _libraries_to(Path("pipeline.log")):
            _watch_while_training(settings, report, say, poll_seconds)
    finally:
        os.chdir(here)
    report.seconds = time.monotonic() - started
    return report


@contextmanager
def _libraries_to(log: Path) -> Iterator[None]:
    """Send what the libraries write to stderr (lm-eval's progress bars, warnings) to `log` for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    with log.open("a") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _watch_while_training(settings: Settings, report: DemoReport, say: Callable[[str], None], every: float) -> None:
    out = settings.demo.out
    with Heartbeat(say) as heartbeat:
        if out.exists() and any(out.iterdir()):
            heartbeat.say(f"the RL run in {out} is there already: watching what it holds")
            _watch(None, settings, report, heartbeat, every)
            return
        from shipyard.flows.watch_run import watch_run  # imports Prefect: after PREFECT_HOME is set

        _watched(settings).mkdir(parents=True, exist_ok=True)  # the run's directory, or its dcp/ with --format dcp
        heartbeat.doing("starting the local Prefect API")
        watch_run(config="shipyard.yaml")  # the local Prefect API starts before training takes the cores
        heartbeat.doing("")
        demo = settings.demo
        heartbeat.say(f"starting the demo RL run ({demo.steps} GRPO steps, a checkpoint every {demo.save_every})")
        with Path("run.log").open("w") as log:
            # not --json: off a terminal the run prints a plain progress line every 10 s, which the heartbeat shows
            command = [sys.executable, "-m", "shipyard.app.cli", "demo-run"]
            trainer = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            try:
                _watch(trainer, settings, report, heartbeat, every)
            finally:
                if trainer.poll() is None:
                    trainer.terminate()
    if trainer.returncode != 0:
        raise DemoRunError(f"the demo RL run failed (exit {trainer.returncode}); see {Path('run.log').resolve()}")


def _watch(
    trainer: subprocess.Popen[bytes] | None, settings: Settings, report: DemoReport, heartbeat: Heartbeat, every: float
) -> None:
    """Run the watch flow whenever the run directory changes, until the trainer has ended and all is taken.

    Fates are said as the pipeline records them, and the first release is
    approved the moment it is published, so the checkpoints after it are
    gated against it as the champion.
    """
    from shipyard.flows.watch_run import watch_run  # imports Prefect: after PREFECT_HOME is set

    def approve_first(version: int) -> None:
        if not report.approved:
            _approve_first(settings, version, report, heartbeat.say)

    heartbeat.trainer, heartbeat.on_release = trainer, approve_first
    seen: set[str] | None = None
    while True:
        finished = trainer is None or trainer.poll() is not None
        listing = set(os.listdir(_watched(settings))) if _watched(settings).is_dir() else set()
        if listing != seen or finished:
            seen = listing
            watch_run(config="shipyard.yaml")
            heartbeat.raise_failure()
        if finished:
            return
        time.sleep(every)


def _watched(settings: Settings) -> Path:
    return Path(settings.watch.source or settings.demo.out)


def _approve_first(settings: Settings, version: int, report: DemoReport, say: Callable[[str], None]) -> None:
    from shipyard.events import Decision
    from shipyard.orchestration.waking import decide_and_wake
    from shipyard.registry.approvals import Signer
    from shipyard.registry.signing import load_private
    from shipyard.registry.stores import release_store

    note = "the demo approves its first release"
    signer = Signer(DEMO_APPROVER, load_private(Path("keys") / f"{DEMO_APPROVER}.key"), "demo")
    decide_and_wake(settings, release_store(settings), settings.release.line, version, Decision.APPROVE, signer, note)
    report.approved.append(version)
    say(f"  approved v{version} as {DEMO_APPROVER}: it is on stable now, the champion later checkpoints must beat")


def summary(report: DemoReport) -> dict[str, Any]:
    """What the demo left behind, read back from the ledger its config names (paths relative to the directory)."""
    from shipyard.registry.releases import Registry
    from shipyard.registry.stores import open_store

    settings = load_settings(report.directory / "shipyard.yaml")
    store = settings.release.store or str(settings.home / "releases")
    store_dir = store if "://" in store or Path(store).is_absolute() else str(report.directory / store)
    state, events = Registry.of(open_store(store_dir, settings.s3.endpoint_url), settings).snapshot()
    line = settings.release.line
    stable = state.channel(line, settings.approval.channel)
    releases: list[dict[str, Any]] = [
        {"version": r.version, "step": r.data.get("step"), "channels": _channels(state, line, r.version)}
        for (name, _), r in sorted(state.releases.items())
        if name == line
    ]
    turned_away = sorted(
        ({"step": e.data["step"], "fate": e.type, "reason": e.data["reason"]} for e in events if e.type in FATES),
        key=lambda t: t["step"],
    )
    pending = [int(r["version"]) for r in releases if stable is None or int(r["version"]) > stable]
    screened = budget(e.data.get("screen") for e in events if e.data.get("line") == line)
    return {
        "directory": str(report.directory),
        "seconds": round(report.seconds, 1),
        "releases": releases,
        "turned_away": turned_away,
        "screening": screened.said(),
        "approved": report.approved,
        "pending": pending,
        "stable": stable,
        "release_store": str(store_dir),
        "prefect_home": str(report.directory / "prefect"),
    }


def describe(s: dict[str, Any]) -> list[str]:
    lines = ["", f"Done in {s['seconds']:.0f} s. Everything is in {s['directory']}.", "", "Releases:"]
    for r in s["releases"]:
        where = ", ".join(r["channels"]) if r["version"] not in s["pending"] else "candidate, awaiting approval"
        lines.append(f"  v{r['version']} from step {r['step']}: {where}")
    lines += ["", f"Turned away ({len(s['turned_away'])}):"]
    lines += [f"  step {t['step']}: {t['fate']} — {t['reason']}" for t in s["turned_away"]]
    lines += ["", f"Screening: {s['screening']}", ""]
    for version in s["pending"]:
        lines.append(
            f"v{version} awaits approval: cd {s['directory']} && shipyard approve v{version}   (signed with {KEY_FILE})"
        )
    lines += [
        "",
        "Where to look:",
        f"  releases:   cd {s['directory']} && shipyard releases list   (store: {s['release_store']})",
        f"  dashboard:  cd {s['directory']} && shipyard dashboard   (http://127.0.0.1:8765; sign in as {YOU}"
        f" with the token in {TOKEN_FILE})",
        f"  Prefect UI: PREFECT_HOME={s['prefect_home']} prefect server start   (then http://127.0.0.1:4200)",
    ]
    return lines


def _channels(state: Any, line: str, version: int) -> list[str]:
    return sorted(
        channel
        for (name, channel), history in state.channels.items()
        if name == line and history and history[-1] == version
    )
