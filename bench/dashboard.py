"""Bench: the time to the dashboard's first page, beside the time of `shipyard --version`, in one run.

A local store with 50 releases (tiny files, every one with a gate verdict and eval scores, the first on
`stable`) behind `shipyard dashboard`, started as a user starts it, in a fresh process: from the command to
the first `GET /` answered 200, and a second `GET /` on the warm app. `shipyard --version` is the floor: the
interpreter, the CLI and its plugins, and nothing else. Medians of 5 (that the dashboard loads no ML library
is tests/test_light.py's). Run: `.venv/bin/python bench/dashboard.py` (about a minute).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from shipyard.registry.publish import promote, publish
from shipyard.registry.stores import LocalStore

SHIPYARD = str(Path(sys.executable).parent / "shipyard")
RELEASES = 50
RUNS = 5


def store_of(root: Path) -> LocalStore:
    store = LocalStore(root / "store")
    for version in range(1, RELEASES + 1):
        candidate = root / f"c{version}"
        candidate.mkdir()
        (candidate / "model.safetensors").write_bytes(f"weights {version}".encode())
        (candidate / "config.json").write_text("{}")
        (candidate / "evals.json").write_text(json.dumps({"arith": {"exact_match": 0.5 + version / 1000}}))
        (candidate / "lineage.json").write_text(json.dumps({"step": 10 * version, "metrics": {"reward": 0.1}}))
        (candidate / "gate.json").write_text(json.dumps({"passed": True, "checks": []}))
        publish(candidate, "main", store, ungated="bench")
    promote(store, "main", 1)
    return store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def first_page(store: Path, env: dict[str, str]) -> tuple[float, float]:
    """Seconds from `shipyard dashboard` to the first page answered, and for a second page."""
    port = free_port()
    started = time.perf_counter()
    command = [SHIPYARD, "dashboard", "--store", str(store), "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:
                    assert page.status == 200
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError(server.stderr.read().decode() if server.stderr else "exited") from None
                time.sleep(0.02)
        first = time.perf_counter() - started
        again = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:
            assert page.status == 200
        return first, time.perf_counter() - again
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = store_of(root)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
        env |= {"SHIPYARD_HOME": str(root / "home"), "SHIPYARD_DASHBOARD__OPEN_READ": "true"}
        env |= {"SHIPYARD_TRUST__ALLOW_UNPINNED": "1"}
        version = []
        for _ in range(RUNS):
            started = time.perf_counter()
            subprocess.run([SHIPYARD, "--version"], env=env, check=True, capture_output=True)
            version.append(time.perf_counter() - started)
        pages = [first_page(store.root, env) for _ in range(RUNS)]
        print(f"shipyard --version: {statistics.median(version):.2f} s (median of {RUNS})")
        print(f"shipyard dashboard → first page ({RELEASES} releases): {statistics.median(p[0] for p in pages):.2f} s")
        print(f"a second page on the warm app: {statistics.median(p[1] for p in pages) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
