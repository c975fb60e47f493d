"""An attacker with write access to the store can delay, never forge: every forgery is ignored and reported."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shipyard.errors import LedgerError, TrustError
from shipyard.registry import ledger as ledger_module
from shipyard.registry.approval_policy import ApprovalPolicy, check_root
from shipyard.registry.approvals import approve
from shipyard.registry.ledger import Event, Ledger, event_key
from shipyard.registry.publish import blob_key, model_digest, publish, pull, verify
from shipyard.registry.stores import LocalStore
from shipyard.registry.trust import anchor_problems, head, set_policy

from .helpers import Keys, candidate, protect


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys")


@pytest.fixture
def store(tmp_path: Path, keys: Keys) -> LocalStore:
    """A protected store with v1 on stable (approved by ana) and v2 a candidate."""
    store = LocalStore(tmp_path / "store")
    protect(store, keys)
    publish(candidate(tmp_path / "c1"), "main", store)
    publish(candidate(tmp_path / "c2", b"other weights"), "main", store)
    approve(store, "main", 1, keys.signer("ana"), "stable")
    return store


def forge(store: LocalStore, kind: str, data: dict[str, Any]) -> int:
    """Append a well-chained event the way anyone with write access could; its seq."""
    state = Ledger(store).refresh()
    event = Event(state.events + 1, kind, data, 0.0, "forger", state.head)
    assert store.put_if_absent(event_key(event.seq), event.body())
    return event.seq


def test_forged_approvals_and_promotions_are_ignored_and_reported(store: LocalStore, keys: Keys) -> None:
    unsigned = forge(store, "approved", {"line": "main", "version": 2, "by": "ana", "note": "", "door": "cli"})
    promoted = forge(store, "promoted", {"line": "main", "channel": "stable", "version": 2, "approved_by": ["ana"]})
    state = Ledger(store).refresh()
    assert state.channel("main", "stable") == 1 and state.words("main", 2) == {}
    assert set(state.ignored) == {unsigned, promoted}
    problems = verify(store)
    assert any(f"{event_key(unsigned)}: ignored by every reader: not signed" in p for p in problems)
    assert any(f"{event_key(promoted)}: ignored by every reader: stable is protected" in p for p in problems)


def test_a_signature_replayed_onto_another_release_does_not_count(store: LocalStore) -> None:
    ana_v1 = next(e for e in _events(store) if e.type == "approved")
    replayed = forge(store, "approved", ana_v1.data | {"version": 2})  # signed over v1 and v1's manifest
    assert "signature does not match" in Ledger(store).refresh().ignored[replayed]


def test_a_policy_not_signed_by_the_owners_is_ignored(store: LocalStore, keys: Keys) -> None:
    rogue = ApprovalPolicy(owners=[keys.public("eve")], approvers={"eve": [keys.public("eve")]})
    event = set_policy_unchecked(store, rogue, keys.path("eve"))
    state = Ledger(store).refresh()
    assert "owners of policy v1" in state.ignored[event] and state.policy is not None
    assert sorted(state.policy.approvers) == ["ana", "bo"]
    with pytest.raises(TrustError, match="belongs to no approver"):
        from shipyard.registry.approvals import person
        from shipyard.registry.signing import load_private

        person(state.policy, load_private(keys.path("eve")))


def set_policy_unchecked(store: LocalStore, policy: ApprovalPolicy, key: Path) -> int:
    """`policy set` refuses a policy the owners did not sign; a store writer appends it anyway."""
    from shipyard.registry.approval_policy import signed_policy
    from shipyard.registry.signing import load_private

    with pytest.raises(TrustError, match="not written: needs 1 signature"):
        set_policy(store, policy, [key])
    state = Ledger(store).refresh()
    return forge(
        store, "policy", signed_policy(policy.model_copy(update={"version": 2}), [load_private(key)], state.head)
    )


def test_readers_refuse_a_store_whose_root_is_not_pinned(tmp_path: Path, keys: Keys) -> None:
    store = LocalStore(tmp_path / "rewritten")
    protect(store, keys)
    root = Ledger(store).refresh().root
    check_root(root, [keys.fingerprint("owner")], store.uri)  # the pinned owner: fine
    with pytest.raises(TrustError, match="not by the pinned"):
        check_root(root, [keys.fingerprint("someone-else")], store.uri)
    with pytest.raises(TrustError, match="no signed policy"):
        check_root([], [keys.fingerprint("owner")], store.uri)


def test_an_edited_or_dropped_head_is_caught_by_an_anchor(store: LocalStore) -> None:
    anchor = head(Ledger(store).refresh())
    last = store.root / event_key(int(anchor.split(":")[0]))
    original = last.read_bytes()
    last.write_bytes(original.replace(b'"version":1', b'"version":2'))
    assert "the log was rewritten" in anchor_problems(store, anchor)[0]
    last.unlink()
    assert "the anchored event" in anchor_problems(store, anchor)[0] and verify(store) == []  # the chain alone: sound
    last.write_bytes(original)
    assert anchor_problems(store, anchor) == []


def test_an_edited_event_in_the_middle_breaks_the_chain(store: LocalStore) -> None:
    first = store.root / event_key(2)
    first.write_bytes(first.read_bytes().replace(b'"version":1', b'"version":7'))
    assert any(event_key(3) in p and "does not chain" in p for p in verify(store))
    with pytest.raises(LedgerError, match="does not follow"):
        Ledger(store).refresh()


def test_a_forged_pack_is_not_trusted(tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_module, "PACK_EVERY", 2)
    store = LocalStore(tmp_path / "store")
    protect(store, keys)  # event 1
    publish(candidate(tmp_path / "c1"), "main", store)  # event 2: the first pack
    publish(candidate(tmp_path / "c2", b"2"), "main", store)
    approve(store, "main", 1, keys.signer("ana"), "stable")  # events 4, 5: the second pack
    packs = sorted((store.root / "ledger" / "packs").iterdir())
    assert [p.name for p in packs] == ["000000000002.json", "000000000004.json"] and verify(store) == []
    fresh = Ledger(store).refresh()
    assert fresh.channel("main", "stable") == 1 and fresh.events == 5
    # Rewrite the second pack so that it promotes v2 instead: it chains, but not to the log's event 4.
    lines = packs[1].read_bytes().split(b"\n")
    packs[1].write_bytes(b"\n".join([lines[0], lines[1].replace(b'"version":1', b'"version":2')]))
    assert any("000000000004.json: differs from the events it packs" in p for p in verify(store))
    reread = Ledger(store).refresh()
    assert reread.channel("main", "stable") == 1 and reread.events == 5


def test_a_flipped_blob_byte_and_a_traversal_name_are_found(store: LocalStore, tmp_path: Path) -> None:
    release = Ledger(store).refresh().releases[("main", 1)]
    manifest_key = blob_key(release.data["manifest"])
    body = json.loads((store.root / manifest_key).read_text())
    blob = store.root / blob_key(body["files"]["model.safetensors"]["digest"])
    os.chmod(blob, 0o644)
    blob.write_bytes(b"Weights")
    assert verify(store) == []  # it still exists
    [flipped] = verify(store, deep=True)
    assert "model.safetensors differs from its digest" in flipped
    # A manifest naming ../../x, stored under the digest its forged release names.
    body["files"] = {"../../escaped": body["files"]["config.json"]}
    evil = json.dumps(body).encode()
    digest = hashlib.sha256(evil).hexdigest()
    store.put_if_absent(blob_key(digest), evil)
    forge(store, "released", release.data | {"version": 3, "candidate_digest": "evil", "manifest": digest})
    with pytest.raises(LedgerError, match="leaves the release directory"):
        pull(store, "main", "v3", tmp_path / "out" / "model")
    assert not (tmp_path / "escaped").exists()
    assert any("v3: file name '../../escaped' leaves" in p for p in verify(store))
    (store.root / manifest_key).write_bytes(b'{"files": {}}')  # an edited manifest of v1
    with pytest.raises(LedgerError, match="does not match its digest"):
        pull(store, "main", "v1", tmp_path / "v1")


def test_publish_needs_a_passing_gate_on_this_candidate(tmp_path: Path, store: LocalStore) -> None:
    ungated = candidate(tmp_path / "c3", b"three")
    (ungated / "gate.json").unlink()
    with pytest.raises(TrustError, match="no gate decision"):
        publish(ungated, "main", store)
    (ungated / "gate.json").write_text(json.dumps({"passed": False, "candidate_digest": model_digest(ungated)}))
    with pytest.raises(TrustError, match="gate decision failed"):
        publish(ungated, "main", store)
    other = candidate(tmp_path / "c4", b"four")
    (ungated / "gate.json").write_text((other / "gate.json").read_text())
    with pytest.raises(TrustError, match="not on this candidate"):
        publish(ungated, "main", store)
    (ungated / "optimizer.pt").write_bytes(b"a trainer pickle")
    published = publish(ungated, "main", store, ungated="hotfix: tokenizer config")
    assert published.release.data["ungated"] == "hotfix: tokenizer config"
    from shipyard.registry.publish import manifest

    files = manifest(store, published.release)["files"]
    assert "optimizer.pt" not in files and manifest(store, published.release)["ungated"]


def test_the_cli_takes_no_approvers_from_the_environment(store: LocalStore, keys: Keys, tmp_path: Path) -> None:
    """The issue's attack: the caller's settings name an approver; the store's policy does not."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env |= {"SHIPYARD_APPROVAL__APPROVERS": '["not-an-approver"]', "SHIPYARD_APPROVAL__REQUIRED": "1"}
    base = [sys.executable, "-m", "shipyard.app.cli"]
    where = ["--store", str(store.root)]
    widened = subprocess.run([*base, "approve", "v2", "--as", "not-an-approver", *where], env=env, capture_output=True)
    assert widened.returncode == 2 and b"unknown key" in widened.stderr  # the settings have no such key any more
    env = {k: v for k, v in env.items() if not k.startswith("SHIPYARD_")}
    env["SHIPYARD_TRUST__OWNERS"] = json.dumps([keys.fingerprint("owner")])  # a reader that pinned the owner
    eve = [*base, "approve", "v2", "--key", str(keys.path("eve")), *where]
    refused = subprocess.run(eve, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert refused.returncode == 2 and "belongs to no approver" in refused.stderr
    bo = [*base, "approve", "v2", "--key", str(keys.path("bo")), "--json", *where]
    done = subprocess.run(bo, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "line": "main",
        "version": 2,
        "approved_by": "bo",
        "promoted": True,
        "waiting": "",
    }
    assert "gate: PASS" in done.stderr
    verified = subprocess.run(
        [*base, "ledger", "verify", *where], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert verified.returncode == 0, verified.stderr


def _events(store: LocalStore) -> list[Event]:
    ledger = Ledger(store)
    return [ledger.event(seq) for seq in range(1, ledger.refresh().events + 1)]


@pytest.mark.s3
def test_on_s3_object_lock_keeps_every_event(s3_endpoint: str, keys: Keys, tmp_path: Path) -> None:
    import boto3
    from botocore.exceptions import ClientError

    from shipyard.registry.stores import S3Store

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = f"locked-{os.getpid()}"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    store = S3Store(f"s3://{bucket}/releases", s3_endpoint, lock_days=1)
    protect(store, keys)
    publish(candidate(tmp_path / "c1"), "main", store)
    approve(store, "main", 1, keys.signer("ana"), "stable")
    key = "releases/" + event_key(3)
    [version] = client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    with pytest.raises(ClientError, match="AccessDenied"):
        client.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])
    assert verify(store) == []
    client.put_object(Bucket=bucket, Key=key, Body=b"{}")  # an overwrite only adds a version...
    client.delete_object(Bucket=bucket, Key="releases/" + event_key(4))  # ...a delete only a marker
    problems = verify(store)
    assert any(event_key(3) in p and "overwritten or deleted" in p for p in problems)
    assert any(event_key(4) in p and "overwritten or deleted" in p for p in problems)
    original = client.get_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])["Body"].read()
    assert json.loads(original)["type"] == "approved"  # and the original is still there to restore


def test_an_existing_store_gets_owners_and_a_policy_with_one_command(tmp_path: Path, keys: Keys) -> None:
    from typer.testing import CliRunner

    from shipyard.app.cli.main import app

    store = LocalStore(tmp_path / "store")
    publish(candidate(tmp_path / "c1"), "main", store)
    forge(store, "approved", {"line": "main", "version": 1, "by": "ana", "note": "before policies", "door": "cli"})
    forge(store, "promoted", {"line": "main", "channel": "stable", "version": 1, "approved_by": ["ana"]})
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(f"approvers:\n  ana: ['{keys.public('ana')}']\n")
    owner = tmp_path / "owner" / "owner.key"
    where = ["--store", str(store.root)]
    done = CliRunner().invoke(app, ["policy", "set", str(policy_file), "--key", str(owner), "--create-key", *where])
    assert done.exit_code == 0, done.output
    assert owner.is_file() and "pin its owners" in done.output
    state = Ledger(store).refresh()
    assert state.channel("main", "stable") == 1 and state.words("main", 1) == {}  # history kept, never a decision
    assert [(a["by"], a["counts"]) for a in state.approvals[("main", 1)]] == [("ana", False)]
    assert state.root == [keys_fingerprint(owner)]
    forge(store, "approved", {"line": "main", "version": 1, "by": "bo", "note": "after", "door": "cli"})
    assert "not signed" in next(iter(Ledger(store).refresh().ignored.values()))


def keys_fingerprint(private: Path) -> str:
    from shipyard.registry.signing import fingerprint

    return fingerprint((private.parent / f"{private.name}.pub").read_text())


def test_secrets_are_masked_in_config_and_logs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from shipyard.app.cli.main import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHIPYARD_NOTIFY__SECRET", "hmac-secret-value")
    monkeypatch.setenv("SHIPYARD_NOTIFY__WEBHOOK_URL", "https://hooks.example/services/T0/B0/token-value")
    monkeypatch.setenv("SHIPYARD_DASHBOARD__SECRET", "session-secret-value")
    for args in (["config"], ["config", "--json"]):
        shown = CliRunner().invoke(app, args)
        assert shown.exit_code == 0, shown.output
        assert "secret-value" not in shown.output and "token-value" not in shown.output and "*****" in shown.output
