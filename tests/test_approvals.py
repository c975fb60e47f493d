"""Approvals end in the ledger: allowlist, the pipeline's identity, N distinct approvers, rejections with a note."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shipyard.approvals import approve, approvers_of, reject
from shipyard.cli import app
from shipyard.errors import ConfigError
from shipyard.ledger import Ledger, State
from shipyard.settings import ApprovalSettings
from shipyard.stores import LocalStore

RULES = ApprovalSettings(approvers=["ana", "bo"], required=2)


def released(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "store")

    def build(state: State) -> tuple[str, dict[str, object]]:
        return "released", {"line": "main", "version": 1, "candidate_digest": "c"}

    Ledger(store).append(build)
    return store


def test_two_distinct_approvers_promote(tmp_path: Path) -> None:
    store = released(tmp_path)
    assert [e.type for e in approve(store, "main", 1, "ana", RULES, note="looks good")] == ["approved"]
    assert approve(store, "main", 1, "ana", RULES) == []  # the same person twice counts once
    assert [e.type for e in approve(store, "main", 1, "bo", RULES, door="dashboard")] == ["approved", "promoted"]
    state = Ledger(store).refresh()
    assert state.channel("main", "stable") == 1
    assert approvers_of(state, "main", 1) == ["ana", "bo"]
    assert [a["door"] for a in state.approvals[("main", 1)]] == ["cli", "dashboard"]


def test_strangers_and_the_pipeline_cannot_approve_and_rejections_need_a_note(tmp_path: Path) -> None:
    store = released(tmp_path)
    with pytest.raises(ConfigError, match="'eve' is not an approver; approvers: ana, bo"):
        approve(store, "main", 1, "eve", RULES)
    with pytest.raises(ConfigError, match="pipeline's own identity"):
        approve(store, "main", 1, "shipyard-pipeline", RULES.model_copy(update={"approvers": ["shipyard-pipeline"]}))
    with pytest.raises(ConfigError, match="needs a note"):
        reject(store, "main", 1, "ana", "", RULES)
    reject(store, "main", 1, "ana", "over-refuses benign requests", RULES)
    assert Ledger(store).refresh().approvals[("main", 1)][0]["type"] == "rejected"


def test_approve_command(tmp_path: Path) -> None:
    store = released(tmp_path)
    env = {"SHIPYARD_APPROVAL__APPROVERS": '["ana"]'}
    args = ["approve", "v1", "--as", "ana", "--store", str(tmp_path / "store"), "--json"]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["promoted"] is True
    refused = CliRunner().invoke(app, ["approve", "v1", "--as", "eve", "--store", str(tmp_path / "store")], env=env)
    assert refused.exit_code == 2 and "not an approver" in refused.output
    assert Ledger(store).refresh().channel("main", "stable") == 1
