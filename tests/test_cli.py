import json
from pathlib import Path

from typer.testing import CliRunner

from shipyard.cli import app

runner = CliRunner()


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "demo-run" in result.output and "config" in result.output


def test_config_json_shows_settings_in_force(tmp_path: Path) -> None:
    config = tmp_path / "s.yaml"
    config.write_text("demo:\n  steps: 17\n")
    result = runner.invoke(app, ["config", "--config", str(config), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["demo"]["steps"] == 17


def test_config_error_is_one_clear_message_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "s.yaml"
    config.write_text("demoo: {}\n")
    result = runner.invoke(app, ["config", "--config", str(config)])
    assert result.exit_code == 2
    assert "unknown key 'demoo'; did you mean 'demo'?" in result.output
    assert "Traceback" not in result.output
