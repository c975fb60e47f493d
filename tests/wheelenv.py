"""Environments with Shipyard installed from its built wheel, outside the source tree, as a machine would have it.

`build_wheel` builds the wheel from a copy of the tree; `wheel_env` makes a virtual environment holding only the
wheel, its dependencies taken from this environment's site-packages (appended after the wheel; their `.pth`
files, the editable install of the tree among them, are not read), so `import shipyard` is the wheel.
"""

import shutil
import site
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_wheel(out: Path) -> Path:
    """The wheel, built from a copy of the tree (setuptools writes build/ beside its source)."""
    source = out / "source"
    ignore = shutil.ignore_patterns(".*", "build", "*.egg-info", "runs", "test-artifacts", "shipyard-demo*")
    shutil.copytree(ROOT, source, ignore=ignore)
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out / "dist")]
    subprocess.run([*build, str(source)], check=True, capture_output=True, timeout=600)
    (wheel,) = (out / "dist").glob("shipyard-*.whl")
    return wheel


def wheel_env(wheel: Path, env_dir: Path) -> Path:
    """A virtual environment at `env_dir` with the wheel installed; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    target = Path(subprocess.check_output([python, "-c", purelib], text=True).strip())
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=600)
    (target / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python
