"""Light paths stay light: the read commands, the approval doors and flows, and the dashboard load no ML library,
and every one of them reaches the store through `Registry.open`, which checks the reader's pins."""

import json
import os
import subprocess
import sys
from pathlib import Path

from shipyard.registry.publish import publish
from shipyard.registry.stores import LocalStore

from .helpers import Keys, candidate, protect

HEAVY = ("torch", "transformers", "lm_eval", "trl", "peft", "datasets", "accelerate")

SCRIPT = """
import json, sys
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import shipyard.flows.approval
from shipyard.app.cli.main import app
from shipyard.app.dashboard.app import create_app
from shipyard.registry.releases import Registry
from shipyard.settings import load_settings

store, key = sys.argv[1], sys.argv[2]
runner = CliRunner()
commands = [
    ["releases", "list"], ["releases", "show", "v1"], ["releases", "diff", "v1", "v2"], ["ledger", "verify"],
    ["ledger", "head"], ["policy", "show"], ["promote", "v1", "--channel", "canary"],
    ["promote", "v2", "--channel", "canary"], ["approve", "v1", "--key", key], ["rollback", "--channel", "canary"],
]
for args in commands:
    result = runner.invoke(app, [*args, "--store", store])
    assert result.exit_code == 0, (args, result.output)
settings = load_settings()
registry = Registry.open(settings, store)
assert TestClient(create_app(settings, registry.store)).get("/").status_code == 200
print(json.dumps(sorted(m for m in json.loads(sys.argv[3]) if m in sys.modules)))
"""


def test_read_commands_approvals_and_the_dashboard_load_no_ml_library(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    for version in (1, 2):
        publish(candidate(tmp_path / f"c{version}", f"w{version}".encode()), "main", store)
    keys = Keys(tmp_path / "keys")
    protect(store, keys, approvers=("ana",))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env |= {
        "SHIPYARD_TRUST__OWNERS": json.dumps([keys.fingerprint("owner")]),
        "SHIPYARD_HOME": str(tmp_path / "home"),
        "SHIPYARD_DASHBOARD__OPEN_READ": "true",
    }
    argv = [sys.executable, "-c", SCRIPT, str(store.root), str(keys.path("ana")), json.dumps(HEAVY)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_nothing_outside_the_registry_builds_a_ledger() -> None:
    """Every command, door, flow and page goes through the Registry (`Registry.open` checks pins and anchors)."""
    root = Path(__file__).parents[1]
    sources = [*(root / "shipyard").rglob("*.py"), *(root / "flows").rglob("*.py")]
    outside = [
        f"{path.relative_to(root)}"
        for path in sources
        if "registry" not in path.relative_to(root).parts and "Ledger(" in path.read_text()
    ]
    assert outside == []
