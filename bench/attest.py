"""Bench: signing a release and `pull --verify`, each against its peer on the same ~1.5B sharded bf16 checkpoint.

The checkpoint is written as `bench/scale.py` writes it (safetensors shards of
at most 1 GB, finite random bf16). Each measurement runs in a child process
(imports paid before the timer, peak RSS its own), page cache warm, medians
of `BENCH_REPEATS` (3):

- signing: Shipyard's release attestations (`shipyard.registry.attest.attested`:
  hard links, the in-toto provenance, the Model Signing bundle) against what
  `model_signing sign key` runs (its `signing.Config` with the same key) on
  the same directory;
- verifying: `pull` + `--verify`'s checks (`verify_pulled`: Model Signing's
  verification of every file, the provenance) of a signed release from a local
  store, against `sha256sum` of its files (the floor a consumer pays to know
  the bytes), `pull` alone (which checks every digest) and Model Signing's
  verification alone.

Run: `.venv/bin/python bench/attest.py [0.5 1.5]` (about 5 minutes at 1.5B).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from scale import make_checkpoint, timed

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
SIGN = """
import json, sys, time
from pathlib import Path
from shipyard.registry.attest import attested
from shipyard.registry.publish import release_files
from shipyard.digests import file_digests
import model_signing  # imports outside the timer, as for the peer's command
model, key = Path(sys.argv[1]), Path(sys.argv[2])
paths = release_files(model)
digests = dict(zip(paths, file_digests(list(paths.values())), strict=True))  # known from intake, as in publish
manifest = {"line": "main", "candidate_digest": "0" * 64, "lineage": {}, "gate": {}, "evals": {}}
start = time.perf_counter()
with attested(paths, digests, manifest, key) as made:
    print(time.perf_counter() - start)
"""
PEER_SIGN = """
import sys, time
from pathlib import Path
from model_signing import signing
model, key, sig = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
start = time.perf_counter()
signing.Config().use_elliptic_key_signer(private_key=key).sign(model, sig)
print(time.perf_counter() - start)
"""
PEER_VERIFY = """
import sys, time
from pathlib import Path
from model_signing import hashing, verifying
model, key = Path(sys.argv[1]), Path(sys.argv[2])
start = time.perf_counter()
config = verifying.Config().use_elliptic_key_verifier(public_key=key)
config.set_hashing_config(hashing.Config().set_ignored_paths(paths=["model.sig"]))
config.verify(model, model / "model.sig")
print(time.perf_counter() - start)
"""
PUBLISH = """
import sys
from pathlib import Path
from shipyard.registry.publish import publish
from shipyard.registry.stores import LocalStore
publish(Path(sys.argv[1]), "main", LocalStore(Path(sys.argv[2])), ungated="bench", release_key=Path(sys.argv[3]))
"""
PULL = """
import json, sys, time
from pathlib import Path
from shipyard.registry.attest import verify_pulled
from shipyard.registry.publish import manifest, pull
from shipyard.registry.ledger import Ledger
from shipyard.registry.stores import LocalStore
import model_signing.verifying, securesystemslib.dsse  # imports outside the timer
store, out, keys, check = LocalStore(Path(sys.argv[1])), Path(sys.argv[2]), [Path(sys.argv[3]).read_text()], sys.argv[4]
start = time.perf_counter()
release = pull(store, "main", "v1", out).release
pulled = time.perf_counter() - start
if check == "verify":
    verify_pulled(out, manifest(store, release), keys)
print(json.dumps({"pull_s": pulled, "total_s": time.perf_counter() - start}))
"""


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def measure(size: str, tmp: Path, tokenizer: Path) -> dict[str, float]:
    from shipyard.registry.attest import keygen_ec

    run = tmp / f"run-{size}"
    make_checkpoint(run, size, tokenizer)
    model = run / "checkpoint-1"
    (model / "trainer_state.json").unlink()  # a candidate: the release's files only
    key = tmp / "release.pem"
    if not key.exists():
        keygen_ec(key)
    sign, peer_sign, rss = [], [], []
    for i in range(REPEATS):
        _, peak, out = timed([sys.executable, "-c", SIGN, str(model), str(key)])
        sign.append(float(out))
        rss.append(peak)
        _, _, out = timed([sys.executable, "-c", PEER_SIGN, str(model), str(key), str(tmp / f"peer-{i}.sig")])
        peer_sign.append(float(out))
    store = tmp / f"store-{size}"
    subprocess.run([sys.executable, "-c", PUBLISH, str(model), str(store), str(key)], check=True)
    verify, plain_pull, floor, peer_verify, verify_rss = [], [], [], [], []
    for i in range(REPEATS):
        checked, plain = tmp / f"checked-{i}", tmp / f"plain-{i}"
        _, peak, out = timed([sys.executable, "-c", PULL, str(store), str(checked), f"{key}.pub", "verify"])
        verify.append(json.loads(out)["total_s"])
        verify_rss.append(peak)
        _, _, out = timed([sys.executable, "-c", PULL, str(store), str(plain), f"{key}.pub", "no"])
        files = sorted(str(p) for p in plain.iterdir() if p.is_file())
        plain_pull.append(json.loads(out)["pull_s"])
        floor.append(seconds(["sha256sum", *files]))
        _, _, out = timed([sys.executable, "-c", PEER_VERIFY, str(checked), f"{key}.pub"])
        peer_verify.append(float(out))
        shutil.rmtree(checked)
        shutil.rmtree(plain)
    bytes_ = sum(p.stat().st_size for p in model.iterdir())
    med = statistics.median
    return {
        "bytes": bytes_,
        "sign_s": round(med(sign), 2),
        "model_signing_sign_s": round(med(peer_sign), 2),
        "sign_over_model_signing": round(med(sign) / med(peer_sign), 2),
        "sign_peak_rss_MB": round(med(rss)),
        "pull_verify_s": round(med(verify), 2),
        "pull_s": round(med(plain_pull), 2),
        "sha256sum_s": round(med(floor), 2),
        "pull_verify_over_sha256sum": round(med(verify) / med(floor), 2),
        "model_signing_verify_s": round(med(peer_verify), 2),
        "pull_verify_peak_rss_MB": round(med(verify_rss)),
    }


def main() -> None:
    sizes = sys.argv[1:] or ["1.5"]
    from shipyard.demo.tiny import build_tiny_model

    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        tokenizer = build_tiny_model(Path(tmp) / "tiny")
        print(json.dumps({size: measure(size, Path(tmp), tokenizer) for size in sizes}, indent=1))


if __name__ == "__main__":
    main()
