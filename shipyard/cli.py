"""The `shipyard` command line. Each command is a thin shell over a library function.

Commands that report state take `--json` and then print only JSON on stdout.
Errors from the `ShipyardError` tree are printed as one clear message and
exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from shipyard.errors import ConfigError, ShipyardError
from shipyard.settings import load_settings

app = typer.Typer(
    help="Shipyard: gated, versioned releases from the checkpoints of long RL runs.", no_args_is_help=True
)
err = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Settings YAML (default: ./shipyard.yaml if present).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def clear_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Print a `ShipyardError` as one message and exit 2, instead of a traceback."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ShipyardError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.command("config")
@clear_errors
def config_command(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Show the settings in force, after the file, the environment and defaults."""
    settings = load_settings(config)
    data = settings.model_dump(mode="json")
    if as_json:
        _print_json(data)
        return
    table = Table("key", "value", title=f"settings ({settings.config_file or 'defaults and environment'})")
    for key, value in _flatten(data):
        table.add_row(key, str(value))
    Console().print(table)


def _metric(metrics: dict[str, Any], key: str) -> str:
    return f"{metrics[key]:.3f}" if key in metrics else "-"


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


@app.command("demo-run")
@clear_errors
def demo_run_command(
    out: Annotated[Path | None, typer.Option(help="Directory for checkpoint-<step>/ (default: demo.out).")] = None,
    steps: Annotated[int | None, typer.Option(help="RL steps (default: demo.steps).")] = None,
    save_every: Annotated[int | None, typer.Option(help="Save every K steps (default: demo.save_every).")] = None,
    keep: Annotated[int | None, typer.Option(help="Keep only the newest M checkpoints (default: all).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default: demo.seed).")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the demo RL run on the CPU: a tiny model learns two-digit addition with GRPO."""
    from shipyard.demo_run import run_demo  # imports torch and TRL: only when asked

    given = {"out": out, "steps": steps, "save_every": save_every, "keep": keep, "seed": seed}
    base = load_settings(config)
    demo = load_settings(config, demo=base.demo.model_dump() | {k: v for k, v in given.items() if v is not None}).demo
    reports = run_demo(demo, progress=not as_json)
    if as_json:
        _print_json([r.as_dict() for r in reports])
        return
    columns = ("step", "reward", "KL", "mean length", "held-out accuracy", "checkpoint")
    table = Table(*columns, title=f"checkpoints in {demo.out}")
    for r in reports:
        table.add_row(
            str(r.step),
            *(_metric(r.metrics, k) for k in ("reward", "kl", "mean_length", "heldout_accuracy")),
            r.path.name,
        )
    Console().print(table)


@app.command("checkpoints")
@clear_errors
def checkpoints_command(
    source: Annotated[
        str | None,
        typer.Option(help="The run: a path, file://, s3://bucket/prefix or hf://org/name (default: watch.source)."),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show what the watcher sees in a run: each checkpoint's step, state, reason, digest and metrics."""
    from shipyard.selection import load_state, view
    from shipyard.sources import open_source
    from shipyard.watch import scan

    settings = load_settings(config)
    source = source or settings.watch.source
    if source is None:
        raise ConfigError("no source: give --source or set watch.source")
    run = open_source(source, settings.s3, settings.hub)
    state = load_state(settings.home / "watch", run.uri)
    scanned = scan(run, settings.home / "snapshots", settings.watch.allow_pickle_weights, skip=state.decided.keys())
    seen = view(scanned, state)
    if as_json:
        _print_json([c.as_dict() for c in seen])
        return
    table = Table("step", "state", "reason", "digest", "reward", "held-out acc", "uri", title=source)
    for c in seen:
        reward, acc = _metric(c.metrics, "reward"), _metric(c.metrics, "heldout_accuracy")
        table.add_row(str(c.step), c.state, c.reason, c.digest[:12], reward, acc, c.uri)
    Console().print(table)


@app.command("posttrain")
@clear_errors
def posttrain_command(
    checkpoint: Annotated[Path, typer.Option(help="The checkpoint: a save_pretrained directory (e.g. a snapshot).")],
    out: Annotated[Path, typer.Option(help="Directory to write the candidate into (empty or new).")],
    recipe: Annotated[
        Path | None, typer.Option(help="Recipe YAML (default: the built-in preference + safety recipe).")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Post-train a checkpoint with a recipe's stages into a release candidate (cached by digests)."""
    from shipyard.posttrain import posttrain
    from shipyard.recipe import DEFAULT_RECIPE

    settings = load_settings(config)
    candidate = posttrain(checkpoint, recipe or DEFAULT_RECIPE, settings.home, out, progress=not as_json)
    if as_json:
        _print_json({"path": str(candidate.path), "cached": candidate.cached, "lineage": candidate.lineage})
        return
    table = Table("stage", "method", "steps", "loss", "reward acc", "reward margin", title=str(candidate.path))
    for stage in candidate.lineage["stages"]:
        metrics = [_metric(stage, key) for key in ("loss", "reward_accuracy", "reward_margin")]
        table.add_row(stage["name"], stage["method"], str(int(stage["steps"])), *metrics)
    Console().print(table)
    status = "cache hit, nothing trained" if candidate.cached else "trained"
    Console().print(f"candidate {candidate.digest[:12]} ({status})")


@app.command("eval")
@clear_errors
def eval_command(
    model: Annotated[Path, typer.Option(help="The model: a save_pretrained directory.")],
    suite: Annotated[
        list[str], typer.Option(help="A built-in suite (capability, safety) or a suite YAML; repeatable.")
    ],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run eval suites on a model with lm-eval (the model loaded once; results cached by digests)."""
    from evals.runner import evaluate
    from evals.suite import load_suite

    settings = load_settings(config)
    if not (model / "config.json").is_file():
        raise ConfigError(f"{model}: not a model directory (no config.json)")
    results = evaluate(model, [load_suite(s) for s in suite], settings.home)
    if as_json:
        _print_json([r.as_dict() for r in results])
        return
    table = Table("suite", "task", "metric", "value", "± stderr", "items", "cached", title=str(model))
    for r in results:
        for task, scores in r.scores.items():
            for metric, value in scores.items():
                if not metric.endswith("_stderr"):
                    stderr = _metric(scores, f"{metric}_stderr")
                    n = str(len(r.items[task]))
                    table.add_row(r.suite, task, metric, f"{value:.3f}", stderr, n, "yes" if r.cached else "no")
    Console().print(table)


@app.command("gate")
def gate_command(
    candidate: Annotated[Path, typer.Option(help="The candidate model directory.")],
    champion: Annotated[
        Path | None, typer.Option(help="The model users have now; none: floors and safety only.")
    ] = None,
    policy: Annotated[Path | None, typer.Option(help="Gate policy YAML (default: the built-in one).")] = None,
    trainer_state: Annotated[
        Path | None, typer.Option(help="The RL checkpoint's trainer_state.json, for the over-optimization check.")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Directory for gate.json and gate.md.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Decide whether a candidate may ship: exit 0 on pass, 1 on fail, 2 on error."""
    from evals.policy import DEFAULT_POLICY, load_policy
    from evals.run_gate import run_gate

    try:
        settings = load_settings(config)
        rules = load_policy(policy or DEFAULT_POLICY)
        decision, out = run_gate(candidate, champion, rules, settings.home, trainer_state, report)
    except ShipyardError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        _print_json(decision.as_dict())
    else:
        table = Table(
            "check",
            "verdict",
            "statistic",
            "threshold",
            "p-value",
            title=f"gate: {'PASS' if decision.passed else 'FAIL'}",
        )
        for c in decision.checks:
            stat = f"{c.statistic:.3f}" if c.statistic is not None else "-"
            p = f"{c.p_value:.4g}" if c.p_value is not None else "-"
            table.add_row(c.name, "pass" if c.passed else "[red]FAIL[/]", stat, c.threshold, p)
        Console().print(table)
        Console().print(f"report: {out / 'gate.md'}")
    raise typer.Exit(0 if decision.passed else 1)


StoreOption = Annotated[
    str | None, typer.Option("--store", help="Release store: path or s3://bucket/prefix (default: release.store).")
]
LineOption = Annotated[str | None, typer.Option("--line", help="Release line (default: release.line).")]


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


@app.command("publish")
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
        _print_json({"created": published.created, "line": name, "version": published.release.version})
        return
    verb = "published" if published.created else "already released"
    Console().print(f"{verb}: {name} v{published.release.version} in {releases.uri}")


@app.command("pull")
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
        _print_json({"line": name, "version": release.version, "path": str(out)})
        return
    Console().print(f"{name} v{release.version} → {out}")


releases_app = typer.Typer(help="The releases of a line.", no_args_is_help=True)
app.add_typer(releases_app, name="releases")


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
        _print_json(rows)
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
        _print_json(shown)
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
        _print_json(changes)
        return
    Console().print(
        f"v{changes['from']} → v{changes['to']}: files changed: {', '.join(changes['files_changed']) or 'none'}"
    )
    table = Table("task", "metric", "delta")
    for task, metrics in changes["score_deltas"].items():
        for metric, delta in metrics.items():
            table.add_row(task, metric, f"{delta:+.3f}")
    Console().print(table)


@app.command("promote")
@clear_errors
def promote_command(
    version: Annotated[str, typer.Argument(help="The version to promote (3 or v3).")],
    channel: Annotated[str, typer.Option(help="The channel to move.")] = "stable",
    store: StoreOption = None,
    line: LineOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Point a channel at a release: one ledger event, no weights copied."""
    from shipyard.publish import promote

    releases, name = _releases(config, store, line)
    release = promote(releases, name, int(version.removeprefix("v")), channel)
    _channel_moved(name, channel, release.version, as_json)


@app.command("rollback")
@clear_errors
def rollback_command(
    channel: Annotated[str, typer.Option(help="The channel to move back.")] = "stable",
    store: StoreOption = None,
    line: LineOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move a channel back to the release it pointed at before, in one step."""
    from shipyard.publish import rollback

    releases, name = _releases(config, store, line)
    release = rollback(releases, name, channel)
    _channel_moved(name, channel, release.version, as_json)


def _channel_moved(line: str, channel: str, version: int, as_json: bool) -> None:
    if as_json:
        _print_json({"line": line, "channel": channel, "version": version})
    else:
        Console().print(f"{channel} → {line} v{version}")


@app.command("mirror")
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
        _print_json({"repo": repo, "mirrored": done})
        return
    Console().print(f"{repo}: mirrored {', '.join(f'v{v}' for v in done) or 'nothing new'}")


@app.command("watch")
@clear_errors
def watch_command(
    source: Annotated[str | None, typer.Option(help="The run to watch (default: watch.source).")] = None,
    once: Annotated[bool, typer.Option("--once", help="Process what is there now, then exit.")] = False,
    every: Annotated[float, typer.Option(help="Seconds between polls when not --once.")] = 30.0,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Watch an RL run: take each selected checkpoint through screening, post-training, the gate and publishing."""
    import time

    from shipyard.watcher import watch_once

    overrides = {"watch": {"source": source}} if source else {}
    settings = load_settings(config, **overrides)
    while True:
        outcomes = watch_once(settings, progress=not as_json)
        if as_json:
            _print_json([o.as_dict() for o in outcomes])
        else:
            for o in outcomes:
                version = f" v{o.version}" if o.version else ""
                Console().print(f"step {o.step}: {o.state}{version} {o.reason}".rstrip())
        if once:
            return
        time.sleep(every)


ledger_app = typer.Typer(help="The release ledger.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")


@ledger_app.command("verify")
@clear_errors
def ledger_verify_command(store: StoreOption = None, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Check the hash chain and that every blob a release names exists; exit 1 on any problem."""
    from shipyard.publish import verify

    releases, _ = _releases(config, store, None)
    problems = verify(releases)
    if as_json:
        _print_json({"store": releases.uri, "problems": problems})
    else:
        for problem in problems:
            err.print(f"[red]{problem}[/]", highlight=False, soft_wrap=True)
        Console().print(f"{releases.uri}: {'sound' if not problems else f'{len(problems)} problem(s)'}")
    raise typer.Exit(1 if problems else 0)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
