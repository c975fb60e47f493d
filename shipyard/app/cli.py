"""The `shipyard` command line. Each command is a thin shell over a library function.

Commands that report state take `--json` and then print only JSON on stdout.
Every error ends a command with one line on stderr and exit status 2
(`cli_common.clear_errors`); `shipyard --debug …` keeps the traceback.
"""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.filesize import decimal
from rich.table import Table

from shipyard.app import cli_flows, cli_releases, cli_trust
from shipyard.app.cli_common import ConfigOption, Debug, JsonOption, clear_errors, format_metric, print_json
from shipyard.errors import ConfigError
from shipyard.model_dir import require_model_dir
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
    for key, value in _flatten(data):
        table.add_row(key, str(value))
    Console().print(table)


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
    from shipyard.demo.rl_run import run_demo  # imports torch and TRL: only when asked

    given = {"out": out, "steps": steps, "save_every": save_every, "keep": keep, "seed": seed}
    base = load_settings(config)
    demo = load_settings(config, demo=base.demo.model_dump() | {k: v for k, v in given.items() if v is not None}).demo
    reports = run_demo(demo, progress=True)
    if as_json:
        print_json([r.as_dict() for r in reports])
        return
    columns = ("step", "reward", "KL", "mean length", "held-out accuracy", "checkpoint")
    table = Table(*columns, title=f"checkpoints in {demo.out}")
    for r in reports:
        table.add_row(
            str(r.step),
            *(format_metric(r.metrics, k) for k in ("reward", "kl", "mean_length", "heldout_accuracy")),
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
    validate: Annotated[
        bool, typer.Option(help="Also copy, hash and validate each complete checkpoint, as the watcher does.")
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show what the watcher sees in a run: each checkpoint's step, state, reason and metrics; nothing is copied.

    With --validate each complete checkpoint is snapshotted into the home and validated (digest, refusals).
    """
    from shipyard.intake.scan import scan
    from shipyard.intake.selection import load_state, view
    from shipyard.intake.sources import open_source

    settings = load_settings(config)
    source = source or settings.watch.source
    if source is None:
        raise ConfigError("no source: give --source or set watch.source")
    run = open_source(source, settings.s3, settings.hub)
    state = load_state(settings.home / "watch", run.uri)
    pickles = settings.watch.allow_pickle_weights
    scanned = scan(run, settings.home, pickles, skip=state.decided.keys(), validate=validate, convert=settings.convert)
    seen = view(scanned, state)
    if as_json:
        print_json([c.as_dict() for c in seen])
        return
    caption = None if validate else "listed only: nothing copied or checked (--validate does both)"
    table = Table("step", "state", "reason", "digest", "reward", "held-out acc", "uri", title=source, caption=caption)
    for c in seen:
        reward, acc = format_metric(c.metrics, "reward"), format_metric(c.metrics, "heldout_accuracy")
        table.add_row(str(c.step), c.state, c.reason, c.digest[:12], reward, acc, c.uri)
    Console().print(table)


@app.command("gc")
@clear_errors
def gc_command(
    dry_run: Annotated[bool, typer.Option(help="Show what would be evicted; delete nothing.")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Keep each cache under the home within its budget (cache.*): evict, least recently used first, what no
    in-flight checkpoint needs. Every watch poll does the same."""
    import time

    from shipyard.intake.selection import keep_within_budgets

    settings = load_settings(config)
    usages = keep_within_budgets(settings, time.time(), dry_run)
    if as_json:
        print_json([u.as_dict() for u in usages])
        return
    verb = "would evict" if dry_run else "evicted"
    table = Table("cache", "held", "budget", verb, "after", "pinned", title=str(settings.home))
    for u in usages:
        freed = f"{len(u.evicted)} ({decimal(u.before - u.after)})" if u.evicted else ""
        over = " [red](over)[/red]" if u.after > u.budget else ""
        row = (decimal(u.before), decimal(u.budget), freed, decimal(u.after) + over, str(u.pinned))
        table.add_row(u.cache, *row)
    Console().print(table)


@app.command("posttrain")
@clear_errors
def posttrain_command(
    checkpoint: Annotated[Path, typer.Option(help="The checkpoint: a save_pretrained directory (e.g. a snapshot).")],
    out: Annotated[Path, typer.Option(help="Directory to write the candidate into (empty or new).")],
    recipe: Annotated[
        Path | None, typer.Option(help="Recipe YAML (default: pipeline.recipe; the demo's under profile: demo).")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Post-train a checkpoint with a recipe's stages into a release candidate (cached by digests)."""
    from shipyard.posttraining.posttrain import launched, posttrain
    from shipyard.profiles import choice

    settings = load_settings(config)
    recipe_file = choice(settings, "recipe", recipe)
    candidate = posttrain(checkpoint, recipe_file, settings.home, out, progress=True)
    if not launched().is_main_process:
        return  # one report per launch, from its main process
    if as_json:
        print_json({"path": str(candidate.path), "cached": candidate.cached, "lineage": candidate.lineage})
        return
    table = Table("stage", "method", "steps", "loss", "reward acc", "reward margin", title=str(candidate.path))
    for stage in candidate.lineage["stages"]:
        metrics = [format_metric(stage, key) for key in ("loss", "reward_accuracy", "reward_margin")]
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
    from shipyard.evals.runner import evaluate
    from shipyard.evals.suite import load_suite

    settings = load_settings(config)
    results = evaluate(require_model_dir(model), [load_suite(s) for s in suite], settings.home)
    if as_json:
        print_json([r.as_dict() for r in results])
        return
    table = Table("suite", "task", "metric", "value", "± stderr", "items", "cached", title=str(model))
    for r in results:
        for task, scores in r.scores.items():
            for metric, value in scores.items():
                if not metric.endswith("_stderr"):
                    stderr = format_metric(scores, f"{metric}_stderr")
                    n = str(len(r.items[task]))
                    table.add_row(r.suite, task, metric, f"{value:.3f}", stderr, n, "yes" if r.cached else "no")
    Console().print(table)


@app.command("gate")
@clear_errors
def gate_command(
    candidate: Annotated[Path, typer.Option(help="The candidate model directory.")],
    champion: Annotated[
        Path | None, typer.Option(help="The model users have now; none: floors and safety only.")
    ] = None,
    policy: Annotated[
        Path | None, typer.Option(help="Gate policy YAML (default: pipeline.policy; the demo's under profile: demo).")
    ] = None,
    trainer_state: Annotated[
        Path | None, typer.Option(help="The RL checkpoint's trainer_state.json, for the over-optimization check.")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Directory for gate.json and gate.md.")] = None,
    checkpoint_digest: Annotated[
        str, typer.Option(help="Digest of the checkpoint the candidate was made from, for the signed verdict.")
    ] = "",
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Decide whether a candidate may ship: exit 0 on pass, 1 on fail, 2 on error.

    With trust.gate_key set, the verdict in gate.json is signed with it (the store's policy names that key).
    """
    from shipyard.evals.policy import load_policy
    from shipyard.evals.run_gate import run_gate
    from shipyard.profiles import choice
    from shipyard.registry.trust import sign_gate_report

    settings = load_settings(config)
    rules = load_policy(choice(settings, "policy", policy))
    decision, out = run_gate(candidate, champion, rules, settings.home, trainer_state, report)
    sign_gate_report(out / "gate.json", settings, checkpoint_digest)
    if as_json:
        print_json(decision.as_dict())
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


app.command("publish")(cli_releases.publish_command)
app.command("pull")(cli_releases.pull_command)
app.command("promote")(cli_releases.promote_command)
app.command("rollback")(cli_trust.rollback_command)
app.command("mirror")(cli_releases.mirror_command)
app.command("approve")(cli_trust.approve_command)
app.command("reject")(cli_trust.reject_command)
app.command("keygen")(cli_trust.keygen_command)
app.add_typer(cli_trust.policy_app, name="policy")
app.add_typer(cli_releases.releases_app, name="releases")
app.add_typer(cli_trust.ledger_app, name="ledger")
app.add_typer(cli_trust.trust_app, name="trust")
app.command("watch")(cli_flows.watch_command)
app.command("serve")(cli_flows.serve_command)
app.command("demo")(cli_flows.demo_command)
app.command("dashboard")(cli_flows.dashboard_command)
app.command("dashboard-token")(cli_flows.dashboard_token_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
