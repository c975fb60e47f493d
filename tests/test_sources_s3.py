"""The S3 source against moto's S3 server on 127.0.0.1, through the real boto3 client."""

import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from shipyard.errors import SourceError
from shipyard.intake.scan import scan
from shipyard.intake.sources import S3Source, open_source
from shipyard.settings import S3Settings

from .helpers import make_checkpoint

pytestmark = pytest.mark.s3


def upload(client: Any, bucket: str, prefix: str, local: Path) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local).as_posix()}")


def test_s3_run_is_scanned_like_a_local_one(s3_endpoint: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = f"runs-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    run = tmp_path / "run"
    make_checkpoint(run, 10, tiny_model_dir)
    make_checkpoint(run, 20, tiny_model_dir)
    (run / "checkpoint-20" / "trainer_state.json").unlink()  # still being written
    upload(client, bucket, "exp1", run)

    seen = scan(open_source(f"s3://{bucket}/exp1", S3Settings(endpoint_url=s3_endpoint)), tmp_path / "cache")
    assert [(c.step, c.state) for c in seen] == [(10, "complete"), (20, "incomplete")]
    assert seen[0].uri == f"s3://{bucket}/exp1/checkpoint-10"
    assert seen[0].metrics == {"reward": 0.1}
    assert (Path(seen[0].path) / "model.safetensors").is_file()


def test_s3_missing_bucket_is_a_source_error(s3_endpoint: str) -> None:
    with pytest.raises(SourceError, match="s3://no-such-bucket/x: cannot list"):
        open_source("s3://no-such-bucket/x", S3Settings(endpoint_url=s3_endpoint)).list_files()


def test_s3_poll_lists_only_where_new_checkpoints_go(s3_endpoint: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = f"runs-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    for step in range(1, 1_200):  # more than one page of old checkpoints
        client.put_object(Bucket=bucket, Key=f"exp/checkpoint-{step}/trainer_state.json", Body=b"{}")
    source = open_source(f"s3://{bucket}/exp", S3Settings(endpoint_url=s3_endpoint))
    assert isinstance(source, S3Source)
    lists: list[str] = []
    source.client.meta.events.register("before-call.s3.ListObjectsV2", lambda **_: lists.append("LIST"))
    decided = {f"checkpoint-{step}" for step in range(1, 1_200)}
    assert len(source.list_files(prune=decided)) == 0
    full = len(lists)
    run = tmp_path / "run"
    make_checkpoint(run, 1_200, tiny_model_dir)
    upload(client, bucket, "exp", run)

    files = source.list_files(prune=decided)
    assert len(lists) - full <= 2
    assert "checkpoint-1200/model.safetensors" in files
    assert all(f.startswith("checkpoint-1200/") for f in files)


def test_s3_full_listing_finds_what_lies_outside_the_windows(s3_endpoint: str, tmp_path: Path) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = f"runs-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="checkpoint-10/trainer_state.json", Body=b"{}")
    source = open_source(f"s3://{bucket}", S3Settings(endpoint_url=s3_endpoint, full_listing_every=2))
    source.list_files()
    client.put_object(Bucket=bucket, Key="final/COMPLETE", Body=b"")
    assert "final/COMPLETE" not in source.list_files()
    assert "final/COMPLETE" in source.list_files()


def test_the_cursor_survives_between_watch_processes_in_the_home(
    s3_endpoint: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A deployed watch is a new process each poll: each opens its source afresh, and the cursor kept in the home
    still keeps the poll to the windows."""
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = f"runs-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    for step in range(1, 1_200):
        client.put_object(Bucket=bucket, Key=f"exp/checkpoint-{step}/trainer_state.json", Body=b"{}")
    decided = {f"checkpoint-{step}" for step in range(1, 1_200)}
    settings, home = S3Settings(endpoint_url=s3_endpoint), tmp_path / "home"

    def poll() -> tuple[list[str], int]:
        source = open_source(f"s3://{bucket}/exp", settings, home=home)  # a new process: nothing in memory
        assert isinstance(source, S3Source)
        lists: list[str] = []
        source.client.meta.events.register("before-call.s3.ListObjectsV2", lambda **_: lists.append("LIST"))
        return source.list_files(prune=decided), len(lists)

    first, full = poll()
    assert first == [] and full >= 2  # the whole prefix, more than one page
    run = tmp_path / "run"
    make_checkpoint(run, 1_200, tiny_model_dir)
    upload(client, bucket, "exp", run)
    files, calls = poll()
    assert calls <= 2 and "checkpoint-1200/model.safetensors" in files
    assert len(list((home / "watch" / "cursors").glob("*.json"))) == 1
    (next((home / "watch" / "cursors").glob("*.json"))).write_text("{not json")  # damaged: a full listing, no error
    files, calls = poll()
    assert calls == full and "checkpoint-1200/model.safetensors" in files
