"""Checkpoint sources: where an RL run writes its checkpoints, behind one small protocol.

A source lists its files as relative posix paths, reads small marker files,
and copies one file of a checkpoint to a local path. `open_source` picks the
implementation from the URI: a local directory, an S3 prefix (boto3) or a
Hugging Face Hub repo (huggingface_hub). Called by the watcher.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Protocol

from botocore.exceptions import ClientError

from shipyard.errors import InvalidCheckpoint, SourceError


class Source(Protocol):
    uri: str

    def list_files(self, prune: Collection[str] = ()) -> list[str]:
        """Every file under the source, as a relative posix path, except under the directories in `prune`."""
        ...

    def read_text(self, path: str) -> str:
        """A small file of the source, as text."""
        ...

    def fetch(self, checkpoint: str, name: str, dest: Path) -> None:
        """Copy file `name` of the checkpoint directory `checkpoint` to `dest`."""
        ...


class LocalSource:
    """A local directory an RL run writes into (`/path` or `file:///path`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = root.resolve().as_uri()

    def list_files(self, prune: Collection[str] = ()) -> list[str]:
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: not a directory")
        pruned = set(prune)
        files = []
        top = len(str(self.root).rstrip(os.sep)) + 1
        for dirpath, dirnames, filenames in os.walk(self.root):
            base = dirpath[top:].replace(os.sep, "/")
            prefix = f"{base}/" if base else ""
            # Not descending into decided checkpoints keeps a poll O(new checkpoints).
            dirnames[:] = [d for d in dirnames if prefix + d not in pruned]
            files += [prefix + name for name in filenames]
        return sorted(files)

    def read_text(self, path: str) -> str:
        try:
            return (self.root / path).read_text(errors="replace")
        except OSError as exc:
            raise SourceError(f"{self.root / path}: cannot read ({exc.strerror})") from None

    def fetch(self, checkpoint: str, name: str, dest: Path) -> None:
        path = self.root / checkpoint / name
        inside = (self.root / checkpoint).resolve()
        if not path.resolve().is_relative_to(inside):
            raise InvalidCheckpoint(f"{path}: points outside the checkpoint ({path.resolve()})")
        try:
            shutil.copyfile(path, dest)
        except FileNotFoundError:
            raise InvalidCheckpoint(f"{path}: vanished while being copied (rotated away?)") from None


class S3Source:
    """An S3 prefix an RL run writes into (`s3://bucket/prefix`), through boto3.

    `endpoint_url` points at any S3-compatible store; boto3 also honours
    `AWS_ENDPOINT_URL` and its usual credential chain.
    """

    def __init__(self, uri: str, endpoint_url: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise SourceError(f"{uri}: expected s3://bucket/prefix")
        self.uri = f"s3://{bucket}/{prefix}".rstrip("/")
        self.bucket = bucket
        self.prefix = f"{prefix.rstrip('/')}/" if prefix else ""
        config = Config(retries={"mode": "standard", "max_attempts": 5})
        self.client = boto3.client("s3", endpoint_url=endpoint_url, config=config)

    def list_files(self, prune: Collection[str] = ()) -> list[str]:
        files = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                files += [obj["Key"].removeprefix(self.prefix) for obj in page.get("Contents", [])]
        except ClientError as exc:
            raise SourceError(f"{self.uri}: cannot list ({exc})") from None
        return _without(files, prune)

    def read_text(self, path: str) -> str:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + path)["Body"].read()
        except ClientError as exc:
            raise SourceError(f"{self.uri}/{path}: cannot read ({exc})") from None
        return bytes(body).decode(errors="replace")

    def fetch(self, checkpoint: str, name: str, dest: Path) -> None:
        key = f"{self.prefix}{checkpoint}/{name}"
        try:
            self.client.download_file(self.bucket, key, str(dest))
        except ClientError as exc:
            raise InvalidCheckpoint(f"s3://{self.bucket}/{key}: cannot be copied, rotated away? ({exc})") from None


class HubSource:
    """A Hugging Face Hub model repo a trainer pushes to (`hf://org/name[@revision]`), through huggingface_hub.

    Checkpoint directories inside the repo (`checkpoint-<step>/` pushed by
    `hub_strategy="all_checkpoints"`, or any layout above) are found at one
    commit: the listing pins the revision's commit, so every file of a scan is
    read from that same commit even if the trainer pushes meanwhile.
    """

    def __init__(self, uri: str, endpoint: str | None = None) -> None:
        from huggingface_hub import HfApi

        repo, _, revision = uri.removeprefix("hf://").partition("@")
        if repo.count("/") != 1:
            raise SourceError(f"{uri}: expected hf://org/name[@revision]")
        self.uri = f"hf://{repo}" + (f"@{revision}" if revision else "")
        self.repo = repo
        self.revision = revision or "main"
        self.commit: str | None = None
        self.api = HfApi(endpoint=endpoint)

    def list_files(self, prune: Collection[str] = ()) -> list[str]:
        from huggingface_hub.errors import HfHubHTTPError

        try:
            info = self.api.model_info(self.repo, revision=self.revision)
        except HfHubHTTPError as exc:
            raise SourceError(f"{self.uri}: cannot list ({exc})") from None
        self.commit = info.sha
        return _without([s.rfilename for s in info.siblings or []], prune)

    def read_text(self, path: str) -> str:
        return self._download(path).read_text(errors="replace")

    def fetch(self, checkpoint: str, name: str, dest: Path) -> None:
        shutil.copyfile(self._download(f"{checkpoint}/{name}"), dest)

    def _download(self, path: str) -> Path:
        from huggingface_hub.errors import HfHubHTTPError

        try:
            return Path(self.api.hf_hub_download(self.repo, path, revision=self.commit or self.revision))
        except HfHubHTTPError as exc:
            raise SourceError(f"{self.uri}/{path}: cannot read ({exc})") from None


def _without(files: list[str], prune: Collection[str]) -> list[str]:
    dirs = tuple(f"{d}/" for d in prune)
    return sorted(f for f in files if not f.startswith(dirs))


def open_source(uri: str, s3_endpoint_url: str | None = None, hub_endpoint: str | None = None) -> Source:
    """The source for `uri`: a local path, `file://`, `s3://bucket/prefix` or `hf://org/name`."""
    if uri.startswith("file://"):
        return LocalSource(Path(uri.removeprefix("file://")))
    if uri.startswith("s3://"):
        return S3Source(uri, s3_endpoint_url)
    if uri.startswith("hf://"):
        return HubSource(uri, hub_endpoint)
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise SourceError(
            f"{uri}: unsupported source scheme '{scheme}'; expected a local path, file://, s3:// or hf://"
        )
    return LocalSource(Path(uri))
