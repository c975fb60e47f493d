"""Release stores: where the ledger and the content-addressed blobs live, behind one small protocol.

A store is a flat key space. `put_if_absent` is the one primitive the ledger
needs to give every event a unique sequence number: it writes a key only if
no object is there yet and says whether it did. `LocalStore` does it with a
hard link of a fully written, fsynced temp file (atomic on POSIX; the
directory is fsynced after). Called by the ledger and the publisher.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from shipyard.errors import ConfigError, StoreError
from shipyard.settings import Settings, release_store_uri, split_s3_uri

FICLONE = 0x40049409  # linux/fs.h
Progress = Callable[[int], None]  # called with a number of bytes just transferred


class Store(Protocol):
    uri: str

    def put_if_absent(self, key: str, body: bytes) -> bool:
        """Write `key` only if absent; True if this call wrote it."""
        ...

    def put(self, key: str, body: bytes) -> None:
        """Write or overwrite `key` (hints only; never events)."""
        ...

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        """The object at `key` (at most `limit` + 1 bytes of it, when given), or None if there is none."""
        ...

    def keys(self, prefix: str, start_after: str = "") -> Iterator[str]:
        """Keys under `prefix` sorting after `start_after`, in order."""
        ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None if there is none."""
        ...

    def put_file(self, key: str, source: Path, progress: Progress | None = None) -> None:
        """Upload a (large) file to `key`, replacing what is there; a reader never sees a partial object.

        `progress`, if given, is called with each number of bytes sent.
        """
        ...

    def get_file(self, key: str, dest: Path) -> None:
        """Download `key` to `dest`."""
        ...

    def rewritten(self, prefix: str) -> list[str]:
        """Keys under `prefix` the store knows were overwritten or deleted ([] if it keeps no versions)."""
        ...


class LocalStore:
    """A directory on a local or network file system."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = root.resolve().as_uri()

    def _path(self, key: str) -> Path:
        path = self.root / key
        if ".." in Path(key).parts or (path.is_absolute() and not path.is_relative_to(self.root)):
            raise StoreError(f"{self.uri}: key {key!r} leaves the store")
        return path

    def put_if_absent(self, key: str, body: bytes) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._write_tmp(path, body)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
        _fsync_dir(path.parent)
        return True

    def put(self, key: str, body: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._write_tmp(path, body), path)
        _fsync_dir(path.parent)

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        """Read without following a link; an entry that is not a regular file (a link, a directory) reads as empty."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError:  # ELOOP: a link, never followed
            return b""
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return b""
        with os.fdopen(fd, "rb") as f:
            return f.read() if limit is None else f.read(limit + 1)

    def keys(self, prefix: str, start_after: str = "") -> Iterator[str]:
        directory = self._path(prefix).parent if not prefix.endswith("/") else self._path(prefix)
        if not directory.is_dir():
            return
        base = directory.relative_to(self.root).as_posix()
        names = sorted(e.name for e in os.scandir(directory) if not e.name.startswith(".tmp-"))
        for name in names:
            key = f"{base}/{name}" if base != "." else name
            if key.startswith(prefix) and key > start_after:
                yield key

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    def get_file(self, key: str, dest: Path) -> None:
        """Copy the object to a new file `dest`; a link or a non-file in the store is not followed (read as empty)."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise StoreError(f"{self.uri}/{key}: missing") from None
        except OSError:
            dest.write_bytes(b"")
            return
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        if not regular:
            os.close(fd)
            dest.write_bytes(b"")
            return
        with os.fdopen(fd, "rb") as src, dest.open("wb") as dst:
            shutil.copyfileobj(src, dst, 8 << 20)

    def put_file(self, key: str, source: Path, progress: Progress | None = None) -> None:
        """A reflink of `source` where the file system can, else a hard link on the same file system (the file,
        shared, becomes read-only), else a copy; flushed to disk before the key appears."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".tmp-{uuid.uuid4().hex}"
        if not (_reflink(source, tmp) or _hard_link(source, tmp)):
            shutil.copyfile(source, tmp)
        try:
            os.chmod(tmp, 0o444)  # blobs are immutable: no in-place write through this or a linked name
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)
        if progress is not None:
            progress(path.stat().st_size)

    def rewritten(self, prefix: str) -> list[str]:
        return []  # a file system keeps no versions: anchors outside the store catch a rewrite

    def _write_tmp(self, path: Path, body: bytes) -> Path:
        fd, name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        return Path(name)


def _reflink(source: Path, dest: Path) -> bool:
    """A copy-on-write clone (btrfs, XFS, …): no bytes copied, and no later write to either shows in the other."""
    try:
        with source.open("rb") as src, dest.open("xb") as dst:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        return True
    except OSError:
        dest.unlink(missing_ok=True)
        return False


def _hard_link(source: Path, dest: Path) -> bool:
    """A second name for `source`'s file, made read-only for every name (refused if that cannot be done)."""
    try:
        os.link(source, dest)
    except OSError:
        return False
    try:
        os.chmod(dest, 0o444)
    except OSError:  # not ours to protect: copy instead
        dest.unlink()
        return False
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3Store:
    """An S3 prefix (`s3://bucket/prefix`), through boto3 with standard retries.

    Conditional writes use `IfNoneMatch='*'`; botocore retries neither 412 nor
    409, and a connection error after the server committed is indistinguishable
    from one before: the ledger reads the slot back and compares its nonce.
    With `lock_days`, every put-if-absent object (ledger events, packs,
    manifests) is written under S3 Object Lock in compliance mode: no one, the
    bucket's owner included, can delete or replace that version until the
    retention ends; a later PUT only adds a version, which `rewritten` reports.
    """

    def __init__(self, uri: str, endpoint_url: str | None = None, lock_days: int | None = None) -> None:
        import boto3
        from botocore.config import Config

        parsed = split_s3_uri(uri)
        if parsed is None:
            raise StoreError(f"{uri}: expected s3://bucket/prefix")
        self.uri, self.bucket, self.prefix = parsed
        self.lock_days = lock_days
        config = Config(retries={"mode": "standard", "max_attempts": 5})
        self.client = boto3.client("s3", endpoint_url=endpoint_url, config=config)

    def put_if_absent(self, key: str, body: bytes) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        lock: dict[str, Any] = {}
        if self.lock_days:
            until = datetime.now(UTC) + timedelta(days=self.lock_days)
            lock = {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": until}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=body, IfNoneMatch="*", **lock)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict") or (
                exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412)
            ):
                return False
            raise StoreError(f"{self.uri}/{key}: cannot write ({exc})") from None
        except BotoCoreError as exc:
            raise StoreError(f"{self.uri}/{key}: cannot write ({exc})") from None
        return True

    def put(self, key: str, body: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=body)
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"{self.uri}/{key}: cannot write ({exc})") from None

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        ranged = {} if limit is None else {"Range": f"bytes=0-{limit}"}
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=self.prefix + key, **ranged)["Body"].read())
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                return None
            if code == "InvalidRange":  # an empty object asked for a range
                return b""
            raise StoreError(f"{self.uri}/{key}: cannot read ({exc})") from None
        except BotoCoreError as exc:
            raise StoreError(f"{self.uri}/{key}: cannot read ({exc})") from None

    def keys(self, prefix: str, start_after: str = "") -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        extra = {"StartAfter": self.prefix + start_after} if start_after else {}
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix, **extra
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    yield obj["Key"].removeprefix(self.prefix)
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"{self.uri}: cannot list {prefix} ({exc})") from None

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> int | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise StoreError(f"{self.uri}/{key}: cannot read ({exc})") from None
        except BotoCoreError as exc:
            raise StoreError(f"{self.uri}/{key}: cannot read ({exc})") from None
        return int(head["ContentLength"])

    def put_file(self, key: str, source: Path, progress: Progress | None = None) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            key_name, config = self.prefix + key, _transfer_config()
            self.client.upload_file(str(source), self.bucket, key_name, Config=config, Callback=progress)
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"{self.uri}/{key}: cannot upload {source} ({exc})") from None

    def get_file(self, key: str, dest: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.download_file(self.bucket, self.prefix + key, str(dest), Config=_transfer_config())
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"{self.uri}/{key}: cannot download ({exc})") from None

    def rewritten(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        counts: dict[str, int] = {}
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                    key = entry["Key"].removeprefix(self.prefix)
                    counts[key] = counts.get(key, 0) + 1
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"{self.uri}: cannot list versions under {prefix} ({exc})") from None
        return sorted(key for key, n in counts.items() if n > 1)


@cache
def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig  # boto3 only when S3 is used: it costs 0.4 s to import

    # Large parts and a few threads: weights are big files; 64 MiB parts keep part counts low.
    return TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20, max_concurrency=4)


def release_store(settings: Settings, uri: str | None = None) -> Store:
    """The release store the settings name (`release.store`, or `uri`), with their S3 endpoint and Object Lock."""
    return open_store(release_store_uri(settings, uri), settings.s3.endpoint_url, settings.release.object_lock_days)


def open_store(uri: str, endpoint_url: str | None = None, lock_days: int | None = None) -> Store:
    """The store at `uri`: a local path, `file://…` or `s3://bucket/prefix` (ledger objects locked `lock_days`)."""
    if uri.startswith("s3://"):
        return S3Store(uri, endpoint_url, lock_days)
    scheme = uri.partition(":")[0]
    if ":" in uri and scheme.isalnum() and not uri.startswith("file://"):  # s3:/x, S3://x, gs://x: not a path
        raise ConfigError(f"{uri}: unsupported store; expected a local path, file:// or s3://bucket/prefix")
    return LocalStore(Path(uri.removeprefix("file://")))
