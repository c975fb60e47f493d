"""The command line at its edges: one clear line for each case, lines to paste never wrapped, sizes in human
units, and `approve` saying what the channel still needs. Each through the real command."""

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from shipyard.app.cli.main import app
from shipyard.registry.approval_policy import ChannelRule
from shipyard.registry.publish import publish
from shipyard.registry.stores import LocalStore

from .helpers import Keys, candidate, pin, protect

runner = CliRunner()


def cli(*args: str, **env: str) -> Any:
    return runner.invoke(app, list(args), env={"COLUMNS": "40", **env})  # a narrow terminal


def test_the_lines_to_paste_are_whole_however_narrow_the_terminal(tmp_path: Path) -> None:
    made = cli("keygen", str(tmp_path / "ana.key"), "--comment", "ana@lab")
    assert made.exit_code == 0, made.output
    public = (tmp_path / "ana.key.pub").read_text().strip()
    assert f"{tmp_path / 'ana.key'}.pub: {public}" in made.stdout.splitlines()
    token = cli("dashboard-token", "--as", "ana")
    assert token.exit_code == 0, token.output
    config = next(line for line in token.stdout.splitlines() if line.startswith("config:"))
    assert config.startswith("config: dashboard: {tokens: {ana: ") and config.endswith("}}") and len(config) > 40


def test_a_public_key_given_for_a_private_one_is_named_as_such(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    publish(candidate(tmp_path / "c1"), "main", store)
    keys = Keys(tmp_path / "keys")
    refused = cli("approve", "v1", "--key", f"{keys.path('ana')}.pub", "--store", str(store.root))
    assert refused.exit_code == 2
    assert refused.stderr.strip().endswith("a public key; give the private key it belongs to (the file without .pub)")
    assert "deserialize" not in refused.stderr


def test_a_mistyped_channel_gets_a_did_you_mean(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    publish(candidate(tmp_path / "c1"), "main", store)
    refused = cli("releases", "show", "candidat", "--store", str(store.root))
    assert refused.exit_code == 2
    assert "no release or channel 'candidat'; did you mean 'candidate'?" in refused.stderr


def test_approve_says_what_the_channel_still_needs(tmp_path: Path, monkeypatch: Any) -> None:
    store = LocalStore(tmp_path / "store")
    publish(candidate(tmp_path / "c1"), "main", store)
    keys = Keys(tmp_path / "keys")
    protect(store, keys, approvers=("ana", "bo"), channels={"stable": ChannelRule(required=2)})
    pin(monkeypatch, keys)
    first = cli("approve", "v1", "--key", str(keys.path("ana")), "--store", str(store.root))
    assert first.exit_code == 0, first.output
    assert "main v1: approved by ana; stable still waits: 1 of the 2 approval(s) stable needs" in first.stdout
    second = cli("approve", "v1", "--key", str(keys.path("bo")), "--store", str(store.root))
    assert second.exit_code == 0, second.output
    assert "main v1: approved by bo; promoted to stable" in second.stdout


def test_a_run_with_no_checkpoint_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    listed = cli("checkpoints", "--source", str(tmp_path / "run"))
    assert listed.exit_code == 0
    assert listed.stdout == ""
    assert listed.stderr.startswith(f"file://{tmp_path / 'run'}: no checkpoint found")
    assert len(listed.stderr.strip().splitlines()) == 1


def test_config_shows_sizes_in_human_units_and_the_demo_last() -> None:
    shown = cli("config", COLUMNS="200")
    assert shown.exit_code == 0, shown.output
    rows = [line.split("│")[1].strip() for line in shown.stdout.splitlines() if line.count("│") == 3]
    values = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in shown.stdout.splitlines()
        if line.count("│") == 3
    }
    assert values["cache.snapshots"] == "200.0 GB" and values["cache.evals"] == "1.0 GB"
    demo = [i for i, key in enumerate(rows) if key.startswith("demo.")]
    assert demo and demo == list(range(len(rows) - len(demo), len(rows)))
