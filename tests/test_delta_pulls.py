"""Delta releases on local and S3 stores: `pull --from` fetches what changed, builds the same bytes, falls back."""

import json
import os
import shutil
from pathlib import Path

import boto3
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from shipyard.app.cli.main import app
from shipyard.registry.ledger import Ledger
from shipyard.registry.publish import blob_key, manifest, publish, pull
from shipyard.registry.stores import LocalStore, S3Store, Store

from .helpers import gated

WEIGHTS = "model.safetensors"


def stepped(source: Path, out: Path, share: float, seed: int) -> Path:
    """A copy of `source` after an RL-like step: `share` of the elements of every tensor moved a little."""
    shutil.copytree(source, out)
    g = torch.Generator().manual_seed(seed)
    tensors = load_file(out / WEIGHTS)
    for name, t in tensors.items():
        moved = torch.rand(t.shape, generator=g) < share
        tensors[name] = torch.where(moved, t + 0.01 * torch.randn(t.shape, generator=g).to(t.dtype), t).contiguous()
    save_file(tensors, out / WEIGHTS, metadata={"format": "pt"})
    (out / "gate.json").unlink(missing_ok=True)
    return gated(out)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"deltas-{tmp_path.name.lower().replace('_', '-')[:40]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return S3Store(f"s3://{bucket}/lab", endpoint)


def test_a_pull_from_the_release_before_fetches_only_the_delta_and_builds_the_same_bytes(
    store: Store, tiny_model_dir: Path, tmp_path: Path
) -> None:
    first = gated(tmp_path / "v1", tiny_model_dir)
    publish(first, "main", store)
    assert "deltas" not in manifest(store, Ledger(store).refresh().releases[("main", 1)])  # nothing before it
    publish(stepped(first, tmp_path / "v2", 0.01, seed=1), "main", store)
    body = manifest(store, Ledger(store).refresh().releases[("main", 2)])
    [(name, patch)] = body["deltas"].items()
    assert name == WEIGHTS and patch["from"] == 1 and patch["size"] < 0.2 * body["files"][WEIGHTS]["size"]

    full = pull(store, "main", "v2", tmp_path / "full")
    assert full.bytes_fetched == full.bytes_total and set(full.how.values()) == {"fetched"}
    held = pull(store, "main", "v1", tmp_path / "held")
    pulled = pull(store, "main", "v2", tmp_path / "fast", base=tmp_path / "held")
    assert pulled.how[WEIGHTS] == "delta" and pulled.how["config.json"] == "kept"
    assert pulled.bytes_fetched == patch["size"] and pulled.bytes_total == full.bytes_total
    for path in (tmp_path / "full").rglob("*"):
        if path.is_file():
            assert (tmp_path / "fast" / path.relative_to(tmp_path / "full")).read_bytes() == path.read_bytes()
    assert held.release.version == 1


def test_a_corrupted_delta_or_a_missing_predecessor_falls_back_to_a_full_fetch_and_says_so(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "store")
    first = gated(tmp_path / "v1", tiny_model_dir)
    publish(first, "main", store)
    publish(stepped(first, tmp_path / "v2", 0.01, seed=2), "main", store)
    pull(store, "main", "v1", tmp_path / "held")
    expected = pull(store, "main", "v2", tmp_path / "full")
    patch = manifest(store, Ledger(store).refresh().releases[("main", 2)])["deltas"][WEIGHTS]

    blob = tmp_path / "store" / blob_key(patch["digest"])
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes()[:-100])  # a store writer cut the delta short
    fell_back = pull(store, "main", "v2", tmp_path / "again", base=tmp_path / "held")
    assert fell_back.how[WEIGHTS].startswith("fetched: its delta did not apply")
    assert (tmp_path / "again" / WEIGHTS).read_bytes() == (tmp_path / "full" / WEIGHTS).read_bytes()
    assert fell_back.bytes_fetched > expected.bytes_total - 1  # the whole file came, after the delta

    config = tmp_path / "held" / "config.json"  # an old file, so its digest is cached when first read
    os.utime(config, (1_000_000_000, 1_000_000_000))
    assert pull(store, "main", "v2", tmp_path / "cached", base=tmp_path / "held").how["config.json"] == "kept"
    text = config.read_text()
    config.write_text("[" + text[1:])
    os.utime(config, (1_000_000_000, 1_000_000_000))  # changed in place: same size, same time
    stale = pull(store, "main", "v2", tmp_path / "stale", base=tmp_path / "held")
    assert stale.how["config.json"] == "fetched: the local copy changed since its digest was taken"
    assert (tmp_path / "stale" / "config.json").read_text() == (tmp_path / "full" / "config.json").read_text()
    config.write_text(text)

    (tmp_path / "held" / WEIGHTS).unlink()  # the consumer's copy lacks the predecessor's weights
    missing = pull(store, "main", "v2", tmp_path / "third", base=tmp_path / "held")
    assert missing.how[WEIGHTS] == "fetched" and missing.how["config.json"] == "kept"


def test_pull_from_reports_what_it_fetched(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPYARD_HOME", str(tmp_path / "home"))
    store = tmp_path / "store"
    first = gated(tmp_path / "v1", tiny_model_dir)
    publish(first, "main", LocalStore(store))
    publish(stepped(first, tmp_path / "v2", 0.01, seed=3), "main", LocalStore(store))
    runner = CliRunner()
    held = runner.invoke(app, ["pull", "v1", "--out", str(tmp_path / "held"), "--store", str(store)])
    assert held.exit_code == 0, held.output
    command = ["pull", "v2", "--from", str(tmp_path / "held"), "--out", str(tmp_path / "v2-pulled")]
    done = runner.invoke(app, [*command, "--store", str(store), "--json"])
    assert done.exit_code == 0, done.output
    said = json.loads(done.stdout)
    assert 0 < said["bytes_fetched"] < 0.2 * said["bytes_total"] and said["files"][WEIGHTS] == "delta"
    elsewhere = ["pull", "v2", "--from", "candidate", "--out", str(tmp_path / "x"), "--store", str(store)]
    nowhere = runner.invoke(app, elsewhere)  # a ref: the copy the pipeline keeps, which this home lacks
    assert nowhere.exit_code == 2 and "no copy of v2 at" in nowhere.stderr
