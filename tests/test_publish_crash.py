"""A publisher killed with SIGKILL at random points, then rerun: one release per candidate, nothing missing."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shipyard.registry.ledger import Ledger
from shipyard.registry.publish import manifest, verify
from shipyard.registry.stores import LocalStore

from .helpers import gated

pytestmark = pytest.mark.slow

PUBLISHER = """
import sys
from pathlib import Path
from shipyard.registry.publish import publish
from shipyard.registry.stores import LocalStore
store = LocalStore(Path(sys.argv[1]))
print("ready", flush=True)
for candidate in sys.argv[2:]:
    publish(Path(candidate), "main", store)
"""


def candidate(tmp_path: Path, i: int) -> Path:
    d = tmp_path / f"candidate-{i}"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "llama"}')
    (d / "tokenizer.json").write_text("{}")  # the same in every candidate: stored once
    (d / "model.safetensors").write_bytes(os.urandom(6 << 20))
    return gated(d)


def test_killed_publisher_leaves_exactly_one_release_per_candidate(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    rng = random.Random(0)
    made: list[Path] = []
    kills = 0
    while kills < 20:
        start = len(made)
        made += [candidate(tmp_path, i) for i in range(start, start + 2)]  # always work left to interrupt
        process = subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, str(store_dir), *map(str, made)], stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.25))  # a point inside hashing, copying, manifest or append
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        assert verify(LocalStore(store_dir)) == []  # no visible release with a missing file; the chain is sound
    subprocess.run([sys.executable, "-c", PUBLISHER, str(store_dir), *map(str, made)], check=True, capture_output=True)
    store = LocalStore(store_dir)
    state = Ledger(store).refresh()
    assert sorted(v for _, v in state.releases) == list(range(1, len(made) + 1))
    assert len({r.candidate_digest for r in state.releases.values()}) == len(made)
    assert verify(store) == []
    for release in state.releases.values():
        assert set(manifest(store, release)["files"]) == {"config.json", "tokenizer.json", "model.safetensors"}
