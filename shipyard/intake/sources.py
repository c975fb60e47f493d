"""Checkpoint sources: where an RL run writes its checkpoints, behind one small protocol.

A source lists its files as relative posix paths, reads small marker files,
and copies one file of a checkpoint to a local path. `open_source` picks the
implementation from the URI: a local directory, an S3 prefix (boto3) or a
Hugging Face Hub repo (huggingface_hub). Called by the watcher.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Collection
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from botocore.exceptions import ClientError

from shipyard.checkpoints import TRAINER_STATE
from shipyard.digests import hash_file
from shipyard.errors import CheckpointInFlux, ConfigError, InvalidCheckpoint, NotFound, SourceError
from shipyard.intake import cursor as cursors
from shipyard.intake.cursor import Cursor, Window
from shipyard.settings import HubSettings, S3Settings, split_s3_uri

EVERY_SAVE = re.compile(r"Training in progress, step (\d+)")  # transformers' commit title per save
STEP_REF = re.compile(r"[A-Za-z_-]*?(\d+)")  # a tag or branch per step: step-40, checkpoint-40, v40
LAST_CHECKPOINT = "last-checkpoint"


class Source(Protocol):
    uri: str

    def list_files(self, prune: Collection[str] = ()) -> list[str]:
        """Every file under the source, as a relative posix path, except under the directories in `prune`."""
        ...

    def read_text(self, path: str) -> str:
        """A small file of the source, as text."""
        ...

    def fetch(self, checkpoint: str, name: str, dest: Path) -> str:
        """Copy file `name` of the checkpoint directory `checkpoint` to `dest`; its sha256."""
        ...

    def version(self, checkpoint: str, name: str) -> str | None:
        """What identifies this file's current content (None: it is not there); compared before and after a copy."""
        ...


CHUNK = 8 << 20


def in_run(directory: str, name: str) -> str:
    """The path of file `name` of `directory` (relative to the run; "" or "." is the run's root)."""
    return name if directory in ("", ".") else f"{directory}/{name}"


def copy_hashing(src: BinaryIO, dest: Path) -> str:
    """Copy the open file `src` to `dest` and return its sha256, reading each byte once."""
    digest = hashlib.sha256()
    with dest.open("xb") as dst:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            dst.write(chunk)
    return digest.hexdigest()


class LocalSource:
    """A local directory an RL run writes into (`/path` or `file:///path`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = root.resolve().as_uri()

    def list_files(self, prune: Collection[str] = ()) -> list[str]:
        if not self.root.exists():
            raise NotFound(f"{self.root}: not a directory (it does not exist)", source=str(self.root))
        if not self.root.is_dir():
            raise ConfigError(f"{self.root}: not a directory", source=str(self.root))
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

    def fetch(self, checkpoint: str, name: str, dest: Path) -> str:
        """Copy one run file, opened once without following a link at any step below the run's root, and checked
        as opened (a regular file): a writer of the run directory cannot swap in a file from elsewhere."""
        path = self.root / checkpoint / name
        try:
            fd = open_beneath(self.root, in_run(checkpoint, name))
        except FileNotFoundError:
            gone = not (self.root / checkpoint).is_dir()
            raise CheckpointInFlux(f"{path}: vanished while being copied", gone=gone) from None
        except OSError as exc:
            raise InvalidCheckpoint(f"{path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as src:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidCheckpoint(f"{path}: not a regular file")
            return copy_hashing(src, dest)

    def version(self, checkpoint: str, name: str) -> str | None:
        try:
            st = (self.root / checkpoint / name).stat(follow_symlinks=False)
        except FileNotFoundError:
            return None
        return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def open_beneath(root: Path, relative: str) -> int:
    """A read-only descriptor of `root`/`relative`, each component opened relative to the one before with
    O_NOFOLLOW: a symbolic link anywhere below `root` is refused (ELOOP, or ENOTDIR for a directory), never
    followed."""
    parts = PurePosixPath(relative).parts
    if not parts or any(part in ("", ".", "..") for part in parts) or PurePosixPath(relative).is_absolute():
        raise OSError(errno.EINVAL, "not a plain relative name")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise OSError(
                        exc.errno, f"{part} is a symbolic link or not a directory; links are never followed"
                    ) from None
                raise
            os.close(fd)
            fd = inner
        try:
            return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OSError(exc.errno, "a symbolic link; run files are opened without following links") from None
            raise
    finally:
        os.close(fd)


class S3Source:
    """An S3 prefix an RL run writes into (`s3://bucket/prefix`), through boto3.

    `endpoint_url` points at any S3-compatible store; boto3 also honours
    `AWS_ENDPOINT_URL` and its usual credential chain. Between full listings,
    a cursor (`shipyard.intake.cursor`) keeps a poll to a few LIST calls however long
    the run.
    """

    def __init__(
        self, uri: str, endpoint_url: str | None = None, full_listing_every: int = 30, cursor_file: Path | None = None
    ) -> None:
        import boto3
        from botocore.config import Config

        parsed = split_s3_uri(uri)
        if parsed is None:
            raise ConfigError(f"{uri}: expected s3://bucket/prefix")
        self.uri, self.bucket, self.prefix = parsed
        self.full_listing_every = full_listing_every
        self.cursor_file = cursor_file  # where the cursor is kept between processes (None: in this object only)
        self.cursor: Cursor | None = cursors.load(cursor_file) if cursor_file else None
        config = Config(retries={"mode": "standard", "max_attempts": 5})
        self.client = boto3.client("s3", endpoint_url=endpoint_url, config=config)

    def list_files(self, prune: Collection[str] = ()) -> list[str]:
        """The first listing, and every `full_listing_every`-th, is full; the others list the cursor's windows."""
        if self.cursor is None or self.cursor.polls >= self.full_listing_every:
            self.cursor = Cursor()
            files = self._list(Window(""))
        else:
            files = sorted({f for window in self.cursor.windows(prune) for f in self._list(window)})
        self.cursor.learn(files)
        self.cursor.polls += 1
        if self.cursor_file is not None:
            cursors.save(self.cursor, self.cursor_file)
        return _without(files, prune)

    def _list(self, window: Window) -> list[str]:
        extra = {"StartAfter": self.prefix + window.start_after} if window.start_after else {}
        files = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + window.prefix, **extra
            )
            for page in pages:
                files += [obj["Key"].removeprefix(self.prefix) for obj in page.get("Contents", [])]
        except ClientError as exc:
            raise SourceError(f"{self.uri}: cannot list ({exc})") from None
        return files

    def read_text(self, path: str) -> str:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + path)["Body"].read()
        except ClientError as exc:
            raise SourceError(f"{self.uri}/{path}: cannot read ({exc})") from None
        return bytes(body).decode(errors="replace")

    def fetch(self, checkpoint: str, name: str, dest: Path) -> str:
        key = self.prefix + in_run(checkpoint, name)
        try:
            self.client.download_file(self.bucket, key, str(dest))
        except ClientError as exc:
            raise CheckpointInFlux(f"s3://{self.bucket}/{key}: cannot be copied ({exc})") from None
        return hash_file(dest)  # parts arrive out of order, in threads: hashed once they are all there

    def version(self, checkpoint: str, name: str) -> str | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=f"{self.prefix}{checkpoint}/{name}")
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise SourceError(f"{self.uri}/{checkpoint}/{name}: cannot read ({exc})") from None
        return f"{head.get('ETag')}:{head.get('ContentLength')}"


class HubSource:
    """A Hugging Face Hub model repo a trainer pushes to (`hf://org/name[@revision]`), through huggingface_hub.

    Every way transformers' `Trainer` pushes a run is found:

    - checkpoint directories in the tree (`checkpoint-<step>/` from
      `hub_strategy="all_checkpoints"`, or any layout of `shipyard.intake.layouts`);
    - `"every_save"`: each commit titled "Training in progress, step N" holds
      that step's model at the repo root;
    - `"checkpoint"`: `last-checkpoint/`, its step read from its `trainer_state.json`;
    - a tag or branch per step (`step-40`, `checkpoint-40`, …).

    The last three appear in the listing as virtual directories `@step-<N>/`,
    each read at its own commit. The tree is listed at one pinned commit, so a
    scan reads every file from the commit it listed even if the trainer pushes
    meanwhile.
    """

    def __init__(self, uri: str, endpoint: str | None = None) -> None:
        from huggingface_hub import HfApi

        repo, _, revision = uri.removeprefix("hf://").partition("@")
        if repo.count("/") != 1:
            raise ConfigError(f"{uri}: expected hf://org/name[@revision]")
        self.uri = f"hf://{repo}" + (f"@{revision}" if revision else "")
        self.repo = repo
        self.revision = revision or "main"
        self.commit: str | None = None
        self.steps: dict[str, tuple[str, str]] = {}  # virtual dir -> (commit, folder in the repo)
        self.api = HfApi(endpoint=endpoint)

    def list_files(self, prune: Collection[str] = ()) -> list[str]:
        from huggingface_hub.errors import HfHubHTTPError

        try:
            tree = self._tree(self.revision)
            self.commit, files = tree
            self.steps = self._steps(files, set(prune))
            for virtual, (commit, folder) in self.steps.items():
                inside = self._tree(commit)[1] if virtual not in prune else []
                files += [f"{virtual}/{f.removeprefix(folder)}" for f in inside if _directly_in(f, folder)]
        except HfHubHTTPError as exc:
            raise SourceError(f"{self.uri}: cannot list ({exc})") from None
        return _without(files, prune)

    def _tree(self, revision: str) -> tuple[str, list[str]]:
        info = self.api.model_info(self.repo, revision=revision)
        assert info.sha is not None
        return info.sha, [s.rfilename for s in info.siblings or []]

    def _steps(self, files: list[str], decided: set[str]) -> dict[str, tuple[str, str]]:
        """Checkpoints held by revisions: commits per save, refs per step, `last-checkpoint/` (later wins)."""
        assert self.commit is not None
        steps = {}
        for commit in reversed(self.api.list_repo_commits(self.repo, revision=self.commit)):
            if match := EVERY_SAVE.fullmatch(commit.title):
                steps[f"@step-{match[1]}"] = (commit.commit_id, "")
        refs = self.api.list_repo_refs(self.repo)
        for ref in [*refs.branches, *refs.tags]:
            if ref.name != self.revision and (match := STEP_REF.fullmatch(ref.name)):
                steps[f"@step-{int(match[1])}"] = (ref.target_commit, "")
        if f"{LAST_CHECKPOINT}/{TRAINER_STATE}" in files:
            state = json.loads(self.read_text(f"{LAST_CHECKPOINT}/{TRAINER_STATE}"))
            if isinstance(state.get("global_step"), int) and f"@step-{state['global_step']}" not in decided:
                steps[f"@step-{state['global_step']}"] = (self.commit, f"{LAST_CHECKPOINT}/")
        return steps

    def read_text(self, path: str) -> str:
        return self._download(path).read_text(errors="replace")

    def fetch(self, checkpoint: str, name: str, dest: Path) -> str:
        with self._download(in_run(checkpoint, name)).open("rb") as src:  # a file of our own cache
            return copy_hashing(src, dest)

    def version(self, checkpoint: str, name: str) -> str | None:
        virtual = checkpoint.partition("/")[0]
        return self.steps.get(virtual, (self.commit or self.revision, ""))[0]  # read at a pinned commit: immutable

    def _download(self, path: str) -> Path:
        from huggingface_hub.errors import HfHubHTTPError

        virtual, _, rest = path.partition("/")
        commit, folder = self.steps.get(virtual, (self.commit or self.revision, ""))
        in_repo = folder + rest if virtual in self.steps else path
        try:
            return Path(self.api.hf_hub_download(self.repo, in_repo, revision=commit))
        except HfHubHTTPError as exc:
            raise SourceError(f"{self.uri}/{path}: cannot read ({exc})") from None


def _directly_in(path: str, folder: str) -> bool:
    return path.startswith(folder) and "/" not in path.removeprefix(folder)


def _without(files: list[str], prune: Collection[str]) -> list[str]:
    dirs = tuple(f"{d}/" for d in prune)
    return sorted(f for f in files if not f.startswith(dirs))


def open_source(
    uri: str, s3: S3Settings | None = None, hub: HubSettings | None = None, home: Path | None = None
) -> Source:
    """The source for `uri`: a local path, `file://`, `s3://bucket/prefix` or `hf://org/name`. With `home`, an S3
    source keeps its listing cursor there between processes (a deployed watch is a new process each poll)."""
    if uri.startswith("file://"):
        return LocalSource(Path(uri.removeprefix("file://")))
    if uri.startswith("s3://"):
        s3 = s3 or S3Settings()
        kept = home / "watch" / "cursors" / f"{hashlib.sha256(uri.encode()).hexdigest()[:32]}.json" if home else None
        return S3Source(uri, s3.endpoint_url, s3.full_listing_every, kept)
    if uri.startswith("hf://"):
        return HubSource(uri, (hub or HubSettings()).endpoint)
    scheme = uri.partition(":")[0]
    if ":" in uri and scheme.isalnum():  # gs://x, s3:/x, HF://x: not a path
        raise ConfigError(f"{uri}: unsupported source '{scheme}:'; expected a local path, file://, s3:// or hf://")
    return LocalSource(Path(uri))
