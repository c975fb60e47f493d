"""File digests are computed once and recomputed whenever the file is not the one that was hashed."""

import hashlib
import os
from pathlib import Path

import pytest

from shipyard import digests


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digests, "cache_path", lambda: tmp_path / "cache" / "digests.sqlite")
    monkeypatch.setattr(digests, "_local", digests.threading.local())


def old_file(path: Path, body: bytes) -> Path:
    path.write_bytes(body)
    os.utime(path, ns=(10**18, 10**18))  # written long ago: not still being written
    return path


def test_an_unchanged_file_is_answered_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = old_file(tmp_path / "w", b"weights")
    assert digests.file_digest(path) == hashlib.sha256(b"weights").hexdigest()
    monkeypatch.setattr(digests, "hash_file", lambda p: pytest.fail(f"{p} read again"))
    assert digests.file_digests([path, path]) == [hashlib.sha256(b"weights").hexdigest()] * 2


def test_a_changed_size_or_mtime_is_hashed_again(tmp_path: Path) -> None:
    path = old_file(tmp_path / "w", b"weights")
    digests.file_digest(path)
    old_file(path, b"WEIGHTS")  # same size, same mtime set back: the documented blind spot
    os.utime(path, ns=(10**18 + 1, 10**18 + 1))
    assert digests.file_digest(path) == hashlib.sha256(b"WEIGHTS").hexdigest()
    path.write_bytes(b"longer weights")
    assert digests.file_digest(path) == hashlib.sha256(b"longer weights").hexdigest()


def test_a_file_written_just_now_is_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w"
    path.write_bytes(b"being written")
    digests.file_digest(path)
    calls = []
    monkeypatch.setattr(digests, "hash_file", lambda p: calls.append(p) or "x")
    digests.file_digest(path)
    assert calls == [path]


def test_an_unusable_cache_only_costs_a_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cache").write_text("a file where the cache's directory should be")
    path = old_file(tmp_path / "w", b"weights")
    assert digests.file_digest(path) == hashlib.sha256(b"weights").hexdigest()
