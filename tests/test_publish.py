"""Publishing, pulling, promoting and rolling back releases on a local store and on S3 (moto)."""

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from shipyard.app.cli.main import app
from shipyard.errors import NotFound, TrustError
from shipyard.registry.approvals import rollback
from shipyard.registry.ledger import Ledger
from shipyard.registry.publish import blob_key, diff, manifest, promote, publish, pull, verify
from shipyard.registry.stores import LocalStore, Progress, S3Store

from .helpers import Keys, candidate, gated, pin, protect


class CountingStore(LocalStore):
    uploads: list[str]

    def put_file(self, key: str, source: Path, progress: Progress | None = None) -> None:
        self.uploads.append(source.name)
        super().put_file(key, source, progress)


def changed_copy(model_dir: Path, out: Path) -> Path:
    shutil.copytree(model_dir, out)
    model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        model.lm_head.weight.mul_(1.01)
    model.save_pretrained(out)
    return gated(out)


@pytest.fixture
def model(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """The tiny model with a passing gate decision."""
    return gated(tmp_path / "model", tiny_model_dir)


def test_publish_is_exactly_once_and_uploads_only_what_changed(
    model: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    store = CountingStore(tmp_path / "store")
    store.uploads = []
    first = publish(model, "main", store)
    assert first.created and first.release.version == 1
    again = publish(model, "main", store)
    assert not again.created and again.release.version == 1
    uploaded = len(store.uploads)
    store.uploads = []
    second = publish(changed_copy(tiny_model_dir, tmp_path / "v2"), "main", store)
    assert second.created and second.release.version == 2
    assert store.uploads == ["model.safetensors", "delta"]  # and its delta from v1; tokenizer, config: already there
    assert uploaded > 1 and verify(store) == []


def test_pull_verifies_and_loads(model: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    publish(model, "main", store)
    release = pull(store, "main", "candidate", tmp_path / "pulled").release
    assert release.version == 1
    AutoModelForCausalLM.from_pretrained(tmp_path / "pulled")
    blob = tmp_path / "store" / blob_key(release.data["manifest"])
    assert blob.is_file()
    with pytest.raises(NotFound, match="no release or channel 'stable'"):
        pull(store, "main", "stable", tmp_path / "nothing")


def test_a_local_publish_links_the_weights_read_only_and_pull_gives_a_copy(model: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    published = publish(model, "main", store)
    weights = model / "model.safetensors"
    [blob] = [
        p for p in (tmp_path / "store" / "blobs" / "sha256").iterdir() if p.stat().st_ino == weights.stat().st_ino
    ]
    assert blob.stat().st_mode & 0o777 == 0o444  # no in-place write through either name changes the release
    out = tmp_path / "pulled"
    pull(store, "main", str(published.release.version), out)
    assert (out / "model.safetensors").stat().st_ino != weights.stat().st_ino
    assert (out / "model.safetensors").read_bytes() == weights.read_bytes()


def test_promotion_and_rollback_copy_no_weights(model: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    publish(model, "main", store)
    publish(changed_copy(tiny_model_dir, tmp_path / "v2"), "main", store)
    blobs = sorted((tmp_path / "store" / "blobs").rglob("*"))
    promote(store, "main", 1, "canary")
    promote(store, "main", 2, "canary")
    assert rollback(store, "main", "canary", None).version == 1
    state = Ledger(store).refresh()
    assert state.channels[("main", "canary")] == [1, 2, 1]
    assert sorted((tmp_path / "store" / "blobs").rglob("*")) == blobs
    with pytest.raises(NotFound, match="has no version 7"):
        promote(store, "main", 7)


def test_verify_reports_a_missing_blob(model: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    release = publish(model, "main", store).release
    files = {p.name: p for p in (tmp_path / "store" / "blobs" / "sha256").iterdir()}
    victim = next(d for d in files if d != release.data["manifest"])
    files[victim].unlink()
    [problem] = verify(store)
    assert "main v1: blob of" in problem and "missing" in problem


@pytest.mark.s3
def test_publish_and_pull_on_s3(model: Path, tmp_path: Path, s3_endpoint: str) -> None:
    bucket = f"releases-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    store = S3Store(f"s3://{bucket}/lab", s3_endpoint)
    assert publish(model, "main", store).release.version == 1
    assert not publish(model, "main", store).created
    pull(store, "main", "v1", tmp_path / "pulled")
    AutoModelForCausalLM.from_pretrained(tmp_path / "pulled")
    assert verify(store) == []


def test_release_commands_end_to_end(
    model: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    store = ["--store", str(tmp_path / "store")]
    keys = Keys(tmp_path / "keys")
    pin(monkeypatch, keys)
    protect(LocalStore(tmp_path / "store"), keys, approvers=("ana",))
    ana = ["--key", str(keys.path("ana"))]

    def run(*args: str) -> Any:
        result = runner.invoke(app, [*args, *store])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout) if "--json" in args else result.stdout

    assert run("publish", "--model", str(model), "--json") == {"created": True, "line": "main", "version": 1}
    assert run("publish", "--model", str(model), "--json")["created"] is False
    run("publish", "--model", str(changed_copy(tiny_model_dir, tmp_path / "v2")))
    refused = runner.invoke(app, ["promote", "v1", *store])
    assert refused.exit_code == 2 and "0 of the 1 approval(s) stable needs" in refused.output
    run("approve", "v1", *ana, "--as", "ana")
    assert run("promote", "v2", "--channel", "canary", "--json") == {"line": "main", "channel": "canary", "version": 2}
    run("approve", "2", *ana)
    assert "stable → main v1" in run("rollback", *ana)
    listed = run("releases", "list", "--json")
    assert [(r["version"], r["channels"]) for r in listed] == [(1, ["stable"]), (2, ["canary", "candidate"])]
    shown = run("releases", "show", "stable", "--json")
    assert shown["version"] == 1 and "config.json" in shown["manifest"]["files"]
    assert run("releases", "diff", "1", "2", "--json")["files_changed"] == ["model.safetensors"]
    assert run("pull", "stable", "--out", str(tmp_path / "pulled"), "--json")["version"] == 1
    assert run("ledger", "verify", "--json")["problems"] == []
    (tmp_path / "store" / "ledger" / "events" / "000000000002.json").write_text("{}")
    broken = runner.invoke(app, ["ledger", "verify", *store])
    assert broken.exit_code == 1


def test_manifest_carries_lineage_gate_and_scores_and_diff_gives_deltas(
    model: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "store")
    old = gated(tmp_path / "old", tiny_model_dir)
    (old / "evals.json").write_text(json.dumps({"arith": {"exact_match": 0.5}}))
    (old / "lineage.json").write_text(json.dumps({"checkpoint_digest": "c1"}))
    publish(old, "main", store)
    new = changed_copy(tiny_model_dir, tmp_path / "new")
    (new / "evals.json").write_text(json.dumps({"arith": {"exact_match": 0.75}}))
    release = publish(new, "main", store).release
    assert manifest(store, release)["gate"]["passed"] is True
    assert "evals.json" not in manifest(store, release)["files"]
    changes = diff(store, "main", "1", "2")
    assert changes["score_deltas"] == {"arith": {"exact_match": 0.25}}
    assert changes["checkpoint"][0] == "c1"


def test_a_released_candidate_is_already_released_whatever_its_gate_says(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    failed = candidate(tmp_path / "c", passed=False)
    with pytest.raises(TrustError, match="its gate decision failed"):
        publish(failed, "main", store)
    first = publish(failed, "main", store, ungated="shipped for a trial")
    again = publish(failed, "main", store)  # no --ungated: nothing to write, so nothing to refuse
    assert again.event is None and again.release.version == first.release.version == 1
