import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shipyard.app.cli.main import app

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


def test_checkpoints_json_lists_step_state_reason_uri(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoint-5").mkdir(parents=True)
    (run / "checkpoint-5" / "config.json").write_text("{}")
    result = runner.invoke(app, ["checkpoints", "--source", str(run), "--json"])
    assert result.exit_code == 0
    [entry] = json.loads(result.stdout)
    assert {"step": 5, "state": "incomplete", "uri": f"{run.resolve().as_uri()}/checkpoint-5"}.items() <= entry.items()
    assert entry["reason"] == "trainer_state.json not yet written"


def test_checkpoints_of_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["checkpoints", "--source", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "nope: not a directory" in result.output


def test_checkpoints_lists_without_copying_unless_asked(tmp_path: Path, tiny_model_dir: Path) -> None:
    from .helpers import make_checkpoint

    run, home = tmp_path / "run", tmp_path / "home"
    make_checkpoint(run, 10, tiny_model_dir)
    env = {"SHIPYARD_HOME": str(home)}
    listed = runner.invoke(app, ["checkpoints", "--source", str(run), "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    [entry] = json.loads(listed.stdout)
    assert (entry["state"], entry["digest"], entry["metrics"]) == ("complete", "", {"reward": 0.1})
    assert not (home / "snapshots").exists()
    validated = runner.invoke(app, ["checkpoints", "--source", str(run), "--validate", "--json"], env=env)
    [entry] = json.loads(validated.stdout)
    assert entry["state"] == "complete" and len(entry["digest"]) == 64 and (home / "snapshots").is_dir()


def test_watch_checks_its_source_before_prefect_starts(tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": ""}
    for source, says in [
        (str(tmp_path / "nope"), "nope: not a directory (it does not exist)"),
        ("gs://bucket/run", "unsupported source 'gs:'"),
        ("s3:/bucket/run", "unsupported source 's3:'"),
    ]:
        command = [sys.executable, "-m", "shipyard.app.cli", "watch", "--once", "--source", source]
        done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and says in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "prefect").exists()  # no ephemeral API was started, no database made


def test_doctor_reports_versions_device_prefect_and_store(tmp_path: Path) -> None:
    fine = runner.invoke(app, ["doctor", "--json"])
    checks = {c["name"]: c for c in json.loads(fine.stdout)}
    assert {"python", "shipyard", "torch", "lm_eval", "prefect", "device", "prefect api", "chromium"} <= set(checks)
    assert checks["release store"]["status"] == "warn"  # the test's home: no ledger yet
    assert fine.exit_code == 0, fine.output
    (tmp_path / "s.yaml").write_text("release: {store: 'gs://nowhere'}\n")
    broken = runner.invoke(app, ["doctor", "--config", str(tmp_path / "s.yaml"), "--json"])
    store = next(c for c in json.loads(broken.stdout) if c["name"] == "release store")
    assert broken.exit_code == 1 and store["status"] == "fail" and "unsupported store" in store["detail"]
    assert {checks[n]["status"] for n in ("recipe", "gate policy", "screening")} == {"ok"}  # the demo's choices
    bad = tmp_path / "gate.yaml"
    bad.write_text("suites: [suites/missing.yaml]\n")
    (tmp_path / "t.yaml").write_text(f"pipeline: {{policy: {bad}, screening_task: nope}}\n")
    wrong = {
        c["name"]: c
        for c in json.loads(runner.invoke(app, ["doctor", "-c", str(tmp_path / "t.yaml"), "--json"]).stdout)
    }
    assert wrong["gate policy"]["status"] == "fail" and "missing.yaml" in wrong["gate policy"]["detail"]
    assert (
        wrong["screening"]["status"] == "fail" and "'nope' is not a task of screening" in wrong["screening"]["detail"]
    )


def test_watch_outside_the_demo_profile_names_the_missing_choice_before_prefect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHIPYARD_PROFILE")
    (tmp_path / "run").mkdir()
    result = runner.invoke(app, ["watch", "--once", "--source", str(tmp_path / "run")])
    assert result.exit_code == 2 and "pipeline.recipe is not set" in result.stderr
    monkeypatch.setenv("SHIPYARD_PIPELINE__RECIPE", "r.yaml")
    monkeypatch.setenv("SHIPYARD_PIPELINE__POLICY", "p.yaml")
    result = runner.invoke(app, ["watch", "--once", "--source", str(tmp_path / "run")])
    assert result.exit_code == 2 and "pipeline.screening_suite is not set" in result.stderr
