"""`shipyard demo` as the README runs it: a fresh directory, releases, one approved, and the CLI ready inside it."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shipyard.demo import DEMO_APPROVER

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "shipyard.cli"]


def test_demo_releases_approves_the_first_and_leaves_the_cli_ready(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # the demo keeps its own
    done = subprocess.run([*CLI, "demo", "--dir", str(directory), "--json"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert len(summary["releases"]) >= 2, summary
    assert summary["turned_away"] and all(t["reason"] for t in summary["turned_away"])
    assert summary["approved"] == [1] and summary["stable"] == 1
    assert summary["pending"] == [r["version"] for r in summary["releases"][1:]]
    assert {p.name for p in directory.iterdir()} >= {"shipyard.yaml", "run", "releases", ".shipyard", "prefect"}
    assert (directory / "prefect" / "prefect.db").is_file()  # the flow runs are recorded in the demo's Prefect home

    def inside(*args: str) -> Any:
        result = subprocess.run([*CLI, *args, "--json"], cwd=directory, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    listed = inside("releases", "list")
    assert [r["version"] for r in listed] == [r["version"] for r in summary["releases"]]
    shown = inside("releases", "show", "v1")
    assert [(a["by"], a["door"]) for a in shown["approvals"]] == [(DEMO_APPROVER, "demo")]
    pending = summary["pending"][0]
    approved = inside("approve", f"v{pending}", "--as", "you", "--note", "looked at the gate report")
    assert approved == {"line": "main", "version": pending, "approved_by": "you", "promoted": True}
