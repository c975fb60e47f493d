import inspect
import json
import shutil
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from shipyard import errors
from shipyard.app.cli.main import app
from shipyard.registry.publish import promote, publish
from shipyard.registry.stores import open_store
from tests.helpers import Keys, gated, pin, protect

runner = CliRunner()


def test_all_lists_every_error_and_every_error_is_in_the_drawn_tree() -> None:
    classes = {n for n, o in vars(errors).items() if inspect.isclass(o) and issubclass(o, errors.ShipyardError)}
    assert set(errors.__all__) == classes
    assert errors.__doc__ is not None
    for name in classes:
        assert name in errors.__doc__


def _commands(typer_app: typer.Typer) -> Iterator[tuple[str, Callable[..., Any]]]:
    for info in typer_app.registered_commands:
        assert info.callback is not None
        yield info.name or info.callback.__name__, info.callback
    for group in typer_app.registered_groups:
        assert group.typer_instance is not None
        yield from _commands(group.typer_instance)


def test_every_command_ends_its_errors_through_clear_errors() -> None:
    commands = dict(_commands(app))
    assert {"approve", "gate", "pull", "list", "verify", "watch", "demo"} <= set(commands)
    wrapper = "clear_errors.<locals>.wrapper"  # functools.wraps copies the name, not the code
    unwrapped = [name for name, callback in commands.items() if callback.__code__.co_qualname != wrapper]
    assert unwrapped == []


@pytest.fixture(scope="module")
def two_releases(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A protected store with v1 and v2 of line main (v2 on candidate, nothing yet on stable); returns its root."""
    root = tmp_path_factory.mktemp("errors")
    store = open_store(str(root / "store"))
    protect(store, Keys(root / "keys"), approvers=("ana",))
    for number in (1, 2):
        model = shutil.copytree(tiny_model_dir, root / f"m{number}")
        (model / "generation_config.json").write_text(json.dumps({"note": number}))
        publish(gated(model), "main", store)
    promote(store, "main", 1, "beta")
    return root


@pytest.fixture(autouse=True)
def _pinned(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests on the protected store read it as a reader that pinned its owner."""
    if "two_releases" in request.fixturenames:
        pin(monkeypatch, Keys(request.getfixturevalue("two_releases") / "keys"))


@pytest.mark.parametrize(
    ("args", "says", "kind"),
    [
        (["releases", "list", "--store", "{root}/stroe"], "no release store here (no ledger)", "not_found"),
        (["releases", "list", "--store", "s3:/bucket"], "s3:/bucket: unsupported store", "bad_input"),
        (["releases", "list", "--line", "mian"], "line 'mian' has no releases; did you mean 'main'?", "not_found"),
        (["releases", "show", "v9"], "line 'main' has no release or channel 'v9'", "not_found"),
        (
            ["pull", "stable", "--out", "{root}/out"],
            "no release or channel 'stable' (channels: beta, candidate)",
            "not_found",
        ),
        (["approve", "banana", "--key", "{root}/keys/ana.key"], "no release or channel 'banana'", "not_found"),
        (["promote", "vX"], "no release or channel 'vX'", "not_found"),
        (
            ["rollback", "--channel", "stabel"],
            "line 'main' has no channel 'stabel' (channels: beta, candidate)",
            "not_found",
        ),
        (["rollback", "--channel", "beta"], "has held only v1: nothing to go back to", "conflict"),
        (["promote", "candidate"], "moves only by signed approvals", "not_allowed"),
        (["ledger", "verify", "--store", "{root}/stroe"], "no release store here", "not_found"),
    ],
)
def test_a_wrong_name_is_one_line_naming_it_and_exit_2(
    two_releases: Path, args: list[str], says: str, kind: str
) -> None:
    argv = [a.format(root=two_releases) for a in args]
    if "--store" not in argv:
        argv += ["--store", str(two_releases / "store")]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert says in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) <= 2  # approve shows the verdict line before failing
    as_json = runner.invoke(app, [*argv, "--json"])
    assert as_json.exit_code == 2 and json.loads(as_json.stdout)["error"] == kind


def test_a_release_is_named_by_version_number_or_channel_on_every_command(two_releases: Path) -> None:
    store = ["--store", str(two_releases / "store")]
    for ref in ("2", "v2", "candidate"):
        shown = runner.invoke(app, ["releases", "show", ref, *store, "--json"])
        assert shown.exit_code == 0 and json.loads(shown.stdout)["version"] == 2
    moved = runner.invoke(app, ["promote", "candidate", "--channel", "beta", *store, "--json"])
    assert moved.exit_code == 0 and json.loads(moved.stdout)["version"] == 2
    back = runner.invoke(app, ["promote", "1", "--channel", "beta", *store, "--json"])
    assert back.exit_code == 0 and json.loads(back.stdout)["version"] == 1


def test_diff_of_releases_without_eval_scores_says_so(two_releases: Path) -> None:
    result = runner.invoke(app, ["releases", "diff", "v1", "v2", "--store", str(two_releases / "store")])
    assert result.exit_code == 0 and "eval scores: none that both releases carry" in result.stdout
    assert "files changed: generation_config.json" in result.stdout


def test_gate_exits_1_only_for_a_gate_that_ran_and_failed(tmp_path: Path) -> None:
    for text in ("", "{", "[1]"):
        (tmp_path / "config.json").write_text(text)
        result = runner.invoke(app, ["gate", "--candidate", str(tmp_path)])
        assert result.exit_code == 2, result.output
        assert f"{tmp_path / 'config.json'}:" in result.stderr


def test_debug_keeps_the_traceback_and_version_prints_the_version(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "releases", "list", "--store", str(tmp_path / "none")])
    assert result.exit_code == 2 and "Traceback" in result.stderr and "no release store here" in result.stderr
    shown = runner.invoke(app, ["--version"])
    assert shown.exit_code == 0 and shown.stdout == f"shipyard {version('shipyard')}\n"
