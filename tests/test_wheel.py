"""`pip install .` gives a working Shipyard: the wheel carries the suites, tasks, policies and data it reads."""

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_built_wheel_installed_outside_the_source_tree_evaluates_and_gates(
    tmp_path: Path, rl_checkpoint: Path
) -> None:
    dist, source = tmp_path / "dist", tmp_path / "source"  # built from a copy: setuptools writes build/ beside it
    ignore = shutil.ignore_patterns(".*", "build", "*.egg-info", "runs", "test-artifacts")
    shutil.copytree(ROOT, source, ignore=ignore)
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist)]
    build.append(str(source))
    subprocess.run(build, check=True, capture_output=True, timeout=600)
    (wheel,) = dist.glob("shipyard-*.whl")
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    target = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
    )
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=600)
    # The dependencies come from this environment's site-packages, appended after the wheel; its own .pth files
    # (the editable install of the source tree among them) are not read, so `shipyard` is the installed wheel.
    (target / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
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
