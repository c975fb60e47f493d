"""`pip install .` gives a working Shipyard: the wheel carries the suites, tasks, policies and data it reads."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from .wheelenv import build_wheel, wheel_env


@pytest.mark.slow
def test_the_built_wheel_installed_outside_the_source_tree_evaluates_and_gates(
    tmp_path: Path, rl_checkpoint: Path
) -> None:
    python = wheel_env(build_wheel(tmp_path), tmp_path / "env")
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    target = Path(subprocess.check_output([python, "-c", purelib], text=True).strip())
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def shipyard(*args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        command = [str(python), "-c", "from shipyard.app.cli.main import main; main()", *args]
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode in ok, done.stderr[-3000:]
        return done

    where = shipyard("--version")
    assert where.stdout.strip() == "shipyard 0.1.0"
    located = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util as u, shipyard.evals, shipyard.flows, shipyard.safety as s;"
            "print(s.__file__, shipyard.evals.__file__, shipyard.flows.__file__,"
            "*(bool(u.find_spec(name)) for name in ('evals', 'flows', 'safety')))",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(path.startswith(str(target / "shipyard")) for path in located[:3]), located
    assert located[3:] == ["False"] * 3, "the wheel installs no generic top-level package"
    scores = json.loads(
        shipyard("eval", "--model", str(rl_checkpoint), "--suite", "capability", "--suite", "safety", "--json").stdout
    )
    assert {r["suite"] for r in scores} == {"capability", "safety"}
    gate = shipyard(
        "gate", "--candidate", str(rl_checkpoint), "--report", str(tmp_path / "report"), "--json", ok=(0, 1)
    )
    assert {c["name"].split(":")[0] for c in json.loads(gate.stdout)["checks"]} >= {"floor", "safety"}
