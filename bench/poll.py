"""Bench: cost of one watcher poll over a run with 10,000 decided checkpoints and one new one.

Local: `poll` (pruned listing, layouts, selection, snapshot and validation of
the one new checkpoint) against its peer, a plain `os.walk` listing of the
same directory, timed side by side in one process. S3: LIST calls of one
listings against moto's S3 server on loopback, counted with a botocore event
hook: the first (full) listing, then polls that each find one new checkpoint,
against the peer, boto3's paginator listing the whole prefix. Run: `.venv/bin/python bench/poll.py` (about a minute).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

from shipyard.checkpoints import Checkpoint
from shipyard.demo.tiny import build_tiny_model
from shipyard.intake.selection import WatchState, poll, save_state, state_file
from shipyard.intake.sources import S3Source, open_source
from shipyard.settings import WatchSettings

OLD = 10_000
FILES = ("config.json", "model.safetensors", "tokenizer.json", "trainer_state.json", "optimizer.pt")


def make_run(root: Path) -> WatchState:
    state = WatchState(open_source(str(root)).uri)
    for step in range(1, OLD + 1):
        d = root / f"checkpoint-{step}"
        d.mkdir(parents=True)
        for name in FILES:
            (d / name).write_bytes(b"{}")
        uri = f"{state.source_uri}/checkpoint-{step}"
        state.decided[uri] = Checkpoint(state.source_uri, root.name, step, "transformers", uri, "skipped")
    return state


def add_new(root: Path, model: Path, step: int) -> None:
    d = root / f"checkpoint-{step}"
    d.mkdir()
    for f in model.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    (d / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": step, "reward": 1.0}]}))


def walk(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def bench_local(tmp: Path) -> dict[str, float]:
    root, home = tmp / "run", tmp / "home"
    state = make_run(root)
    model = build_tiny_model(tmp / "model")
    policy = WatchSettings(max_in_flight=OLD * 2)
    poll_ms, walk_ms, idle_ms = [], [], []
    save_state(home / "watch", state, list(state.decided.values()), now=0.0)
    t = time.perf_counter()
    _, state = poll(open_source(str(root)), home, policy, now=0.0)  # a restart: reads the state file
    restart_ms = (time.perf_counter() - t) * 1000
    for i in range(5):
        add_new(root, model, OLD + 1 + i)
        t = time.perf_counter()
        selected, state = poll(open_source(str(root)), home, policy, now=float(i), state=state)
        poll_ms.append((time.perf_counter() - t) * 1000)
        assert [c.step for c in selected] == [OLD + 1 + i], selected
        t = time.perf_counter()
        poll(open_source(str(root)), home, policy, now=float(i), state=state)
        idle_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        walk(root)
        walk_ms.append((time.perf_counter() - t) * 1000)
    assert state_file(home / "watch", state.source_uri).exists()
    return {
        "poll_new_ms": statistics.median(poll_ms),
        "poll_idle_ms": statistics.median(idle_ms),
        "walk_ms": statistics.median(walk_ms),
        "restart_poll_ms": restart_ms,
    }


def bench_s3(port: int) -> dict[str, float]:
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket="runs")
    for step in range(1, OLD + 1):
        for name in ("config.json", "trainer_state.json"):
            client.put_object(Bucket="runs", Key=f"exp/checkpoint-{step}/{name}", Body=b"{}")
    source = S3Source("s3://runs/exp", endpoint)
    calls = []
    source.client.meta.events.register("before-call.s3.ListObjectsV2", lambda **kw: calls.append(1))
    decided = {f"checkpoint-{step}" for step in range(1, OLD + 1)}
    t = time.perf_counter()
    source.list_files(prune=decided)  # the first listing is full
    first = {"s3_keys": 2 * OLD, "s3_full_list_calls": len(calls), "s3_full_list_ms": (time.perf_counter() - t) * 1000}
    poll_ms, peer_ms, poll_calls = [], [], []
    for step in range(OLD + 1, OLD + 6):
        for name in ("config.json", "trainer_state.json"):
            client.put_object(Bucket="runs", Key=f"exp/checkpoint-{step}/{name}", Body=b"{}")
        calls.clear()
        t = time.perf_counter()
        files = source.list_files(prune=decided)
        poll_ms.append((time.perf_counter() - t) * 1000)
        poll_calls.append(len(calls))
        assert f"checkpoint-{step}/config.json" in files, files
        decided.add(f"checkpoint-{step}")
        t = time.perf_counter()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket="runs", Prefix="exp/")
        assert sum(len(page["Contents"]) for page in pages) == 2 * step
        peer_ms.append((time.perf_counter() - t) * 1000)
    return first | {
        "s3_poll_list_calls_max": max(poll_calls),
        "s3_poll_ms": statistics.median(poll_ms),
        "s3_peer_full_list_ms": statistics.median(peer_ms),
    }


def main() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with tempfile.TemporaryDirectory() as tmp:
        local = bench_local(Path(tmp))
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5123
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        s3 = bench_s3(port)
    finally:
        server.stop()
    print(json.dumps(local | s3, indent=1))


if __name__ == "__main__":
    main()
