"""Bench: release storage. Upload throughput against boto3's defaults, incremental bytes, promotion, ledger appends.

- Upload: one 200 MB file to moto's S3 server on loopback through
  `S3Store.put_file` (tuned TransferConfig) against `upload_file` with boto3's
  defaults, alternating, 3 rounds, medians.
- Incremental release: bytes uploaded when only the weights change.
- Promotion of a 10 MB and a 1 GB release (local store): one event either way.
- Ledger append at 10 and 100,000 events (local store): in a running process
  that has read the log, and the first append of a fresh process (which folds
  the whole log to know the next version).
Run: `.venv/bin/python bench/releases.py` (about three minutes).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

from shipyard.registry.ledger import EVENTS, PACK_EVERY, PACKS, Event, Ledger, apply, event_key, pack_key
from shipyard.registry.publish import model_digest, promote, publish
from shipyard.registry.state import State
from shipyard.registry.stores import LocalStore, Progress, S3Store

MB = 1 << 20


def timed(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def bench_upload(tmp: Path, port: int) -> dict[str, float]:
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket="bench")
    big = tmp / "weights.bin"
    big.write_bytes(os.urandom(200 * MB))
    store = S3Store("s3://bench/store", endpoint)
    ours, peer = [], []
    for i in range(3):
        ours.append(timed(store.put_file, f"ours-{i}", big))
        peer.append(timed(client.upload_file, str(big), "bench", f"peer-{i}"))
    return {
        "upload_ours_MBps": 200 / statistics.median(ours),
        "upload_boto3_defaults_MBps": 200 / statistics.median(peer),
        "upload_ratio": statistics.median(peer) / statistics.median(ours),
    }


class Counting(LocalStore):
    uploaded = 0

    def put_file(self, key: str, source: Path, progress: Progress | None = None) -> None:
        self.uploaded += source.stat().st_size
        super().put_file(key, source, progress)


def model_dir(path: Path, weights: int) -> Path:
    path.mkdir()
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "tokenizer.json").write_bytes(os.urandom(2 * MB))
    (path / "model.safetensors").write_bytes(os.urandom(weights))
    return gated(path)


def gated(path: Path) -> Path:
    """A passing gate decision naming the directory's digest, as the gate writes it."""
    (path / "gate.json").write_text(json.dumps({"passed": True, "candidate_digest": model_digest(path)}))
    return path


def bench_incremental_and_promotion(tmp: Path) -> dict[str, float]:
    store = Counting(tmp / "inc")
    first = model_dir(tmp / "m1", 10 * MB)
    publish(first, "main", store)
    second = tmp / "m2"
    second.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (second / name).write_bytes((first / name).read_bytes())
    (second / "model.safetensors").write_bytes(os.urandom(10 * MB))
    store.uploaded = 0
    publish(gated(second), "main", store)
    result = {"incremental_release_MB_uploaded": store.uploaded / MB, "incremental_release_MB_total": 12.0}
    for label, size in (("10MB", 10 * MB), ("1GB", 1024 * MB)):
        local = LocalStore(tmp / f"promote-{label}")
        publish(model_dir(tmp / f"p-{label}", size), "main", local)
        result[f"promotion_{label}_ms"] = timed(promote, local, "main", 1) * 1000
    return result


def fill(store_dir: Path, n: int) -> None:
    """Write a chained log of `n` release events and its packs directly, as appends would leave them."""
    for directory in (EVENTS, PACKS):
        (store_dir / directory).mkdir(parents=True)
    state = State()
    bodies: list[bytes] = []
    for seq in range(1, n + 1):
        data = {"line": "main", "version": seq, "candidate_digest": f"{seq:064x}"}
        event = Event(seq, "released", data, 0.0, "bench", state.head)
        (store_dir / event_key(seq)).write_bytes(event.body())
        apply(state, event)
        bodies.append(event.body())
        if seq % PACK_EVERY == 0:
            (store_dir / pack_key(seq)).write_bytes(b"\n".join(bodies))
            bodies = []


def bench_append(tmp: Path) -> dict[str, float]:
    result = {}
    for n in (10, 100_000):
        store = LocalStore(tmp / f"ledger-{n}")
        fill(store.root, n)
        fresh = timed(
            Ledger(store).append,
            lambda s: ("released", {"line": "main", "version": s.latest("main") + 1, "candidate_digest": "x"}),
        )
        running = Ledger(store)
        running.refresh()
        times = [
            timed(
                running.append,
                lambda s, i=i: (
                    "released",
                    {"line": "main", "version": s.latest("main") + 1, "candidate_digest": f"r{i}"},
                ),
            )
            for i in range(20)
        ]
        result[f"append_{n}_running_ms"] = statistics.median(times) * 1000
        result[f"append_{n}_fresh_process_ms"] = fresh * 1000
    return result


def main() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=5124, verbose=False)
        server.start()
        try:
            result = bench_upload(tmp, 5124)
        finally:
            server.stop()
        result |= bench_incremental_and_promotion(tmp)
        result |= bench_append(tmp)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
