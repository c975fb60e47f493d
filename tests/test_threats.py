"""THREATS.md, proved: each "cannot" of a store writer, a run-directory writer and a dashboard user, tried for real.

Store writers append well-chained events (`forge`) or rewrite objects on disk; readers are the real commands
(`shipyard promote`, `releases list`, `pull`, `ledger verify`) and the real dashboard app.
"""

import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shipyard.app.cli.main import app
from shipyard.digests import hash_file
from shipyard.errors import LedgerError, TrustError
from shipyard.registry.approval_policy import ApprovalPolicy, ChannelRule, DoorRule, decision
from shipyard.registry.approvals import approve, reject, rollback
from shipyard.registry.ledger import MAX_EVENT_BYTES, Event, Ledger, event_key
from shipyard.registry.publish import blob_key, publish, pull, verify
from shipyard.registry.signing import load_private
from shipyard.registry.stores import LocalStore

from .helpers import PIPELINE, Keys, candidate, pin, protect


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Keys:
    keys = Keys(tmp_path / "keys")
    pin(monkeypatch, keys)  # the readers pin the owner of every store these tests protect
    return keys


def releases(store: LocalStore, n: int) -> LocalStore:
    for version in range(1, n + 1):
        publish(candidate(store.root.parent / f"{store.root.name}-c{version}", f"w{version}".encode()), "main", store)
    return store


def forge(store: LocalStore, kind: str, data: Any) -> int:
    """Append a well-chained event the way anyone with write access to the store could; its seq."""
    state = Ledger(store).refresh()
    event = Event(state.events + 1, kind, data, time.time(), "forger", state.head)
    assert store.put_if_absent(event_key(event.seq), event.body())
    return event.seq


def data_of(store: LocalStore, seq: int) -> dict[str, Any]:
    return dict(Ledger(store).event(seq).data)


def cli(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


def test_after_a_signed_rollback_no_keyless_command_or_event_moves_stable_back(tmp_path: Path, keys: Keys) -> None:
    store = releases(LocalStore(tmp_path / "store"), 2)
    protect(store, keys)
    approve(store, "main", 1, keys.signer("ana"), "stable")
    approve(store, "main", 2, keys.signer("ana"), "stable")
    assert rollback(store, "main", "stable", keys.signer("bo"), "v2 regressed").version == 1
    forged = forge(store, "promoted", {"line": "main", "channel": "stable", "version": 2, "approved_by": ["ana"]})
    refused = cli("promote", "v2", "--channel", "stable", "--store", str(store.root))
    assert refused.exit_code == 2 and "moves only by signed approvals" in refused.stderr
    state = Ledger(store).refresh()
    assert state.channel("main", "stable") == 1 and "stable is protected" in state.ignored[forged]
    assert any(event_key(forged) in p for p in verify(store))


def test_a_replayed_move_does_nothing_even_when_the_channel_is_back_on_the_head_it_left(
    tmp_path: Path, keys: Keys
) -> None:
    store = releases(LocalStore(tmp_path / "store"), 2)
    protect(store, keys)
    approve(store, "main", 1, keys.signer("ana"), "stable")
    approve(store, "main", 2, keys.signer("ana"), "stable")
    rollback(store, "main", "stable", keys.signer("bo"), "v2 regressed")
    back = Ledger(store).refresh().events
    approve(store, "main", 2, keys.signer("bo"), "stable", "fixed upstream")  # v2 again: the head v1 left before
    assert Ledger(store).refresh().channels[("main", "stable")] == [1, 2, 1, 2]
    forge(store, "rolled_back", data_of(store, back))  # the very same signed rollback, weeks later
    assert Ledger(store).refresh().channel("main", "stable") == 2
    reject(store, "main", 1, keys.signer("ana"), "v1 leaks the system prompt")
    with pytest.raises(TrustError, match="rejected by ana"):
        rollback(store, "main", "stable", keys.signer("bo"), "back to v1?")  # a signed rollback meets the veto
    assert Ledger(store).refresh().channel("main", "stable") == 2


def test_decisions_from_before_the_first_policy_are_history_not_decisions(tmp_path: Path, keys: Keys) -> None:
    store = releases(LocalStore(tmp_path / "store"), 1)
    forge(store, "approved", {"line": "main", "version": 1, "by": "ana", "note": "before", "door": "cli"})
    protect(store, keys, channels={"stable": ChannelRule(required=2)})
    approve(store, "main", 1, keys.signer("bo"), "stable")
    state = Ledger(store).refresh()
    assert state.channel("main", "stable") is None and state.words("main", 1) == {"bo": "approved"}
    shown = cli("releases", "show", "v1", "--json", "--store", str(store.root))
    assert [(a["by"], a["counts"]) for a in json.loads(shown.stdout)["approvals"]] == [("ana", False), ("bo", True)]


def test_a_decision_counts_in_no_other_store_and_for_no_other_channel(tmp_path: Path, keys: Keys) -> None:
    channels = {"stable": ChannelRule(), "canary": ChannelRule()}
    one = releases(LocalStore(tmp_path / "one"), 1)
    other = releases(LocalStore(tmp_path / "other"), 1)  # the same candidate: the same manifest digest
    for store in (one, other):
        protect(store, keys, channels=channels)
    [approved, _] = approve(one, "main", 1, keys.signer("ana"), "canary")
    copied = forge(other, "approved", approved.data)
    assert "signed for another store" in Ledger(other).refresh().ignored[copied]
    for_stable = forge(one, "approved", approved.data | {"channel": "stable"})
    state = Ledger(one).refresh()
    assert "signature does not match" in state.ignored[for_stable]
    assert state.channel("main", "canary") == 1 and state.channel("main", "stable") is None


def test_signatures_older_than_the_policy_allows_do_not_add_up(tmp_path: Path, keys: Keys) -> None:
    store = releases(LocalStore(tmp_path / "store"), 1)
    protect(store, keys, channels={"stable": ChannelRule(required=2)}, signature_days=1)
    state = Ledger(store).refresh()
    release = state.releases[("main", 1)]
    fields = {
        "store": state.store_id,
        "line": "main",
        "version": 1,
        "manifest": release.data["manifest"],
        "channel": "stable",
        "from_version": None,
        "from_seq": 0,
        "gated_by": PIPELINE.fingerprint("gate"),
        "note": "",
    }
    stale = decision(load_private(keys.path("ana")), "approved", "ana", "cli", fields, time.time() - 3 * 86400)
    forge(store, "approved", stale)  # ana's signature from three days ago, delivered late
    approve(store, "main", 1, keys.signer("bo"), "stable")
    assert Ledger(store).refresh().channel("main", "stable") is None
    approve(store, "main", 1, keys.signer("ana"), "stable")  # ana signs again, now
    assert Ledger(store).refresh().channel("main", "stable") == 1


def test_one_door_key_never_counts_as_two_people_and_is_never_an_approvers_key(tmp_path: Path, keys: Keys) -> None:
    def door(several: bool) -> dict[str, DoorRule]:
        return {"dashboard": DoorRule(key=keys.public("door"), attests=["ana", "bo"], several=several)}

    strict = releases(LocalStore(tmp_path / "strict"), 1)
    protect(strict, keys, channels={"stable": ChannelRule(required=2)}, doors=door(False))
    for who in ("ana", "bo"):
        approve(strict, "main", 1, keys.signer(who, "dashboard", key="door"), "stable")
    assert Ledger(strict).refresh().channel("main", "stable") is None
    approve(strict, "main", 1, keys.signer("bo"), "stable")  # bo with his own key: two people now
    assert Ledger(strict).refresh().channel("main", "stable") == 1
    several = releases(LocalStore(tmp_path / "several"), 1)
    protect(several, keys, channels={"stable": ChannelRule(required=2)}, doors=door(True))
    for who in ("ana", "bo"):
        approve(several, "main", 1, keys.signer(who, "dashboard", key="door"), "stable")
    assert Ledger(several).refresh().channel("main", "stable") == 1
    with pytest.raises(ValueError, match="signs with an approver's key"):
        ApprovalPolicy(
            owners=[keys.public("owner")],
            approvers={"ana": [keys.public("ana")]},
            doors={"dashboard": DoorRule(key=keys.public("ana"), attests=["ana"])},
        )


def test_a_hand_written_gate_verdict_is_refused_or_ungated_never_pass(tmp_path: Path, keys: Keys) -> None:
    store = LocalStore(tmp_path / "store")
    protect(store, keys)
    hand_written = candidate(tmp_path / "hand", b"never evaluated", signed=False)
    refused = cli("publish", "--model", str(hand_written), "--store", str(store.root))
    assert refused.exit_code == 2 and "the gate decision is not signed" in refused.stderr
    (hand_written / "gate.json").write_text(json.dumps(_signed_by(keys, "eve", hand_written)))
    with pytest.raises(TrustError, match="does not name as a gate key"):
        publish(hand_written, "main", store)
    # A store whose policy names no gate key takes the file, but nothing calls it PASS and stable stays shut.
    open_gate = LocalStore(tmp_path / "no-gate-keys")
    protect(open_gate, keys, gate=[])
    publish(hand_written, "main", open_gate)
    env = {"SHIPYARD_TRUST__OWNERS": json.dumps([keys.fingerprint("owner")])}
    done = cli("approve", "v1", "--key", str(keys.path("ana")), "--store", str(open_gate.root), env=env)
    assert done.exit_code == 0, done.output
    assert "gate: UNVERIFIED" in done.stderr and "PASS" not in done.stderr
    assert Ledger(open_gate).refresh().channel("main", "stable") is None


def _signed_by(keys: Keys, who: str, model: Path) -> dict[str, Any]:
    from shipyard.registry.approval_policy import sign_gate

    gate = json.loads((model / "gate.json").read_text())
    return sign_gate(gate, load_private(keys.path(who)), "checkpoint-digest")


def test_every_reader_refuses_a_rewritten_log_it_remembers_or_pins(tmp_path: Path, keys: Keys) -> None:
    store = releases(LocalStore(tmp_path / "store"), 2)
    protect(store, keys)
    reject(store, "main", 2, keys.signer("bo"), "unsafe")
    where = ["--store", str(store.root)]
    home = {"SHIPYARD_HOME": str(tmp_path / "reader")}
    assert cli("releases", "list", *where, env=home).exit_code == 0  # the reader remembers the head it saw
    pinned = cli("ledger", "head", *where).stdout.strip()
    _drop_and_rechain(store, 4)  # the rejection dropped, the log re-chained
    approve(store, "main", 2, keys.signer("ana"), "stable")  # ana's approval, now unopposed
    for args in (["releases", "list"], ["pull", "v2", "--out", str(tmp_path / "out")], ["approve", "v2"]):
        refused = cli(*args, *where, env=home)
        assert refused.exit_code == 2 and "differs from the anchored event 4" in refused.stderr, refused.output
    fresh = cli("releases", "list", *where, env={"SHIPYARD_TRUST__ANCHOR": pinned})
    assert fresh.exit_code == 2 and "differs from the anchored event 4" in fresh.stderr
    new_reader = {"SHIPYARD_HOME": str(tmp_path / "new-reader")}
    assert cli("releases", "list", *where, env=new_reader).exit_code == 0  # one with no anchor believes it


def _drop_and_rechain(store: LocalStore, seq: int) -> None:
    """Drop event `seq` and write the events after it again, each chained to the one before: a clean-looking log."""
    ledger = Ledger(store)
    later = [ledger.event(n) for n in range(seq + 1, ledger.refresh().events + 1)]
    for n in range(seq, seq + len(later) + 1):
        (store.root / event_key(n)).unlink()
    for event in later:
        forge(store, event.type, event.data)


def test_pull_writes_only_files_it_created_never_through_a_planted_link(tmp_path: Path, keys: Keys) -> None:
    store = releases(LocalStore(tmp_path / "store"), 1)
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    for name in ("config.json", ".config.json.part", ".model.safetensors.part"):
        (outside / name).write_text("mine")
        (out / name).symlink_to(outside / name)
    pull(store, "main", "v1", out)
    assert all((outside / name).read_text() == "mine" for name in os.listdir(outside))
    assert not (out / "config.json").is_symlink() and (out / "config.json").read_text() == "{}"
    assert sorted(os.listdir(out)) == [
        ".config.json.part",
        ".model.safetensors.part",
        "config.json",
        "model.safetensors",
    ]
    # A blob a store writer swapped for other bytes never lands, not even half-way.
    digest = Ledger(store).refresh().releases[("main", 1)].data["manifest"]
    files = json.loads((store.root / blob_key(digest)).read_text())["files"]
    weights = store.root / blob_key(files["model.safetensors"]["digest"])
    os.chmod(weights, 0o644)
    weights.write_bytes(b"a store writer's bytes")
    with pytest.raises(LedgerError, match="does not match its digest"):
        pull(store, "main", "v1", tmp_path / "fresh")
    assert os.listdir(tmp_path / "fresh") == ["config.json"]  # what checked out landed; nothing else, no leftovers


def test_intake_never_copies_a_file_swapped_for_a_link_while_it_reads(tmp_path: Path) -> None:
    from shipyard.errors import InvalidCheckpoint
    from shipyard.intake.sources import LocalSource

    run = tmp_path / "run"
    (run / "checkpoint-1").mkdir(parents=True)
    secret = tmp_path / "secret"
    secret.write_bytes(b"outside the run")
    target, spare = run / "checkpoint-1" / "model.safetensors", run / "checkpoint-1" / ".spare"
    target.write_bytes(b"weights")
    stop = threading.Event()

    def flip() -> None:  # a writer of the run directory: a regular file, then a link out, atomically, again and again
        while not stop.is_set():
            spare.unlink(missing_ok=True)
            spare.symlink_to(secret)
            os.replace(spare, target)
            spare.write_bytes(b"weights")
            os.replace(spare, target)

    thread = threading.Thread(target=flip)
    thread.start()
    copies, refused = 0, 0
    try:
        for attempt in range(20_000):  # until both outcomes were seen (a few hundred tries), whatever the scheduler
            if attempt >= 200 and copies and refused:
                break
            dest = tmp_path / "copy"
            dest.unlink(missing_ok=True)
            try:
                LocalSource(run).fetch("checkpoint-1", "model.safetensors", dest)
                copies += 1
            except InvalidCheckpoint:
                refused += 1
                continue
            assert dest.read_bytes() == b"weights"
    finally:
        stop.set()
        thread.join()
    assert copies and refused  # both happened: the race was real, and the link was never followed


def test_nothing_in_a_store_crashes_a_reader(tmp_path: Path, keys: Keys, tiny_model_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from shipyard.app.dashboard.app import create_app
    from shipyard.settings import Settings

    store = releases(LocalStore(tmp_path / "store"), 2)
    protect(store, keys)
    listed = forge(store, "policy", ["not", "an", "object"])
    (store.root / event_key(listed + 1)).mkdir()  # a directory in the next slot
    approve(store, "main", 1, keys.signer("ana"), "stable")  # the log goes on after both
    state = Ledger(store).refresh()
    big = Event(state.events + 1, "approved", {"pad": "x" * MAX_EVENT_BYTES}, 0.0, "f", state.head)
    store.put_if_absent(event_key(big.seq), big.body())
    (store.root / "ledger" / "packs").mkdir(parents=True, exist_ok=True)
    (store.root / "ledger" / "packs" / "not-a-number.json").write_text("{}")
    missing = Ledger(store).refresh().releases[("main", 2)].data["manifest"]
    (store.root / blob_key(missing)).unlink()
    where = ["--store", str(store.root)]
    listing = cli("releases", "list", "--json", *where)
    assert listing.exit_code == 0, listing.output
    assert [r["version"] for r in json.loads(listing.stdout)] == [1, 2]
    assert Ledger(store).refresh().channel("main", "stable") == 1
    problems = verify(store)
    for expected in (
        f"{event_key(listed)}: ignored by every reader: not a ledger event (a field of the wrong type)",
        f"{event_key(listed + 1)}: ignored by every reader: not a ledger event",
        f"{event_key(big.seq)}: ignored by every reader: not a ledger event (larger than",
        "not-a-number.json: not a pack of the ledger",
        "manifest of main v2 is missing",
    ):
        assert any(expected in p for p in problems), (expected, problems)
    settings = Settings(home=tmp_path / "home")
    with TestClient(create_app(settings, store)) as client:
        index = client.get("/")
        assert index.status_code == 200 and "unreadable" in index.text


def test_dashboard_sign_outs_hold_everywhere_and_throttles_key_on_the_connecting_address(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from shipyard.app.dashboard.app import create_app
    from shipyard.app.dashboard.auth import COOKIE, Auth, client_address
    from shipyard.registry.doors import hash_token
    from shipyard.settings import DashboardSettings, Settings

    keys = Keys(tmp_path / "keys")
    store = releases(LocalStore(tmp_path / "store"), 1)
    protect(store, keys, doors={"dashboard": DoorRule(key=keys.public("door"), attests=["ana"])})
    settings = Settings(
        home=tmp_path / "home",
        dashboard={"tokens": {"ana": hash_token("t")}, "secret": "shared"},
        trust={"door_keys": {"dashboard": keys.path("door")}, "owners": [keys.fingerprint("owner")]},
    )
    first, second = TestClient(create_app(settings, store)), TestClient(create_app(settings, store))
    csrf = _login_csrf(first)
    signed_in = first.post("/login", data={"csrf": csrf, "name": "ana", "token": "t"}, follow_redirects=False)
    cookie = signed_in.cookies[COOKIE]
    second.cookies.set(COOKIE, cookie)
    token = _csrf_of(second)
    assert token  # the second process takes the session: it offers the signed-in form
    first.post("/logout", data={"csrf": _csrf_of(first)})
    late = second.post("/releases/1/approve", data={"csrf": token})
    assert late.status_code == 403  # signed out on the first process: refused on the second
    # Throttling: by the connecting address; X-Forwarded-For only from a trusted proxy.
    assert client_address("10.0.0.5", "1.2.3.4", []) == "10.0.0.5"
    assert client_address("10.0.0.5", "1.2.3.4, 9.9.9.9", ["10.0.0.5"]) == "9.9.9.9"
    auth = Auth(DashboardSettings(), lambda: {"ana"}, tmp_path / "h")
    for _ in range(10):
        auth.failed("10.6.6.6")  # eve, failing as ana
    assert auth.throttled("10.6.6.6") and not auth.throttled("10.1.1.1")  # ana, elsewhere, is not locked out
    guesses = [
        first.post(
            "/login",
            data={"csrf": _login_csrf(first), "name": "ana", "token": f"g{i}"},
            headers={"X-Forwarded-For": f"203.0.113.{i}"},
            follow_redirects=False,
        ).headers["location"]
        for i in range(7)
    ]
    assert guesses[-1] == "/login?flash=throttled"  # a new forged address per guess does not help
    over_https = TestClient(create_app(settings, store), base_url="https://dashboard.lab")
    done = over_https.post(
        "/login", data={"csrf": _login_csrf(over_https), "name": "ana", "token": "t"}, follow_redirects=False
    )
    assert "secure" in done.headers["set-cookie"].lower()


def _login_csrf(client: Any) -> str:
    form = client.get("/login").text
    return re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]


def _csrf_of(client: Any) -> str:
    page = client.get("/releases/1").text
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    return found.group(1) if found else ""


def test_policy_set_never_prints_a_key_file_and_prints_pins_unwrapped(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHIPYARD_TRUST__OWNERS")  # a store's first policy: nothing to pin yet
    store = releases(LocalStore(tmp_path / "store"), 1)
    policy = tmp_path / "policy.yaml"
    policy.write_text("approvers:\n  ana: [keys/ana.key]\n")  # the private key, named by mistake
    keys.path("ana")
    owner = tmp_path / "owner.key"
    wrong = cli("policy", "set", str(policy), "--key", str(owner), "--create-key", "--store", str(store.root))
    assert wrong.exit_code == 2 and "not an OpenSSH public key line" in wrong.stderr
    assert "PRIVATE" not in wrong.output and "BEGIN" not in wrong.output
    policy.write_text("approvers:\n  ana: [keys/ana.key.pub]\n")
    done = cli("policy", "set", str(policy), "--key", str(owner), "--store", str(store.root))
    assert done.exit_code == 0, done.output
    from shipyard.registry.signing import fingerprint

    pin = fingerprint((tmp_path / "owner.key.pub").read_text())
    assert f'trust: {{owners: ["{pin}"]}}' in done.stdout.splitlines()
    assert f"SHIPYARD_TRUST__OWNERS='[\"{pin}\"]'" in done.stdout.splitlines()


def test_the_threat_model_names_only_tests_that_exist() -> None:
    """THREATS.md is kept true: every test it cites for a "cannot" exists (a bare name: in any test file)."""
    tests = Path(__file__).parent
    defined = {p.name: set(re.findall(r"^def (test_\w+)", p.read_text(), re.M)) for p in tests.glob("test_*.py")}
    anywhere = set().union(*defined.values())
    cited = re.findall(r"`((?:test_\w+\.py)?(?:::)?(?:test_\w+)?)`", (tests.parent / "THREATS.md").read_text())
    assert len(cited) > 20
    for name in cited:
        module, _, function = name.rpartition("::") if "::" in name else ("", "", name)
        if function.endswith(".py"):
            assert function in defined, name
        elif module:
            assert function in defined.get(module, set()), name
        else:
            assert function in anywhere, name


def test_a_consumer_checks_a_pulled_release_without_shipyard(tmp_path: Path, keys: Keys) -> None:
    """The release's Model Signing bundle passes the real `model_signing verify key` and fails after one byte."""
    import shutil
    import subprocess
    import sys

    release_key = keys.ec("release")
    store = LocalStore(tmp_path / "store")
    protect(store, keys, release_keys=[(tmp_path / "keys" / "release.pem.pub").read_text()])
    model = candidate(tmp_path / "c1", b"weights")
    (model / "lineage.json").write_text(json.dumps({"run": "s3://runs/a", "step": 40, "checkpoint_digest": "ab" * 32}))
    publish(model, "main", store, release_key=release_key)
    approve(store, "main", 1, keys.signer("ana"), "stable")
    out = tmp_path / "pulled"
    done = cli("pull", "stable", "--out", str(out), "--verify", "--json", "--store", str(store.root))
    assert done.exit_code == 0, done.output
    held = json.loads(done.stdout)["verified"]
    assert any("model.sig: every file checked" in h for h in held) and any("signed decisions by ana" in h for h in held)
    tool = [str(Path(sys.executable).with_name("model_signing")), "verify", "key", str(out)]
    tool += ["--signature", str(out / "model.sig"), "--public_key", str(tmp_path / "keys" / "release.pem.pub")]
    passed = subprocess.run(tool, capture_output=True, text=True)
    assert passed.returncode == 0 and "Verification succeeded" in passed.stdout, passed.stderr
    changed = tmp_path / "changed"
    shutil.copytree(out, changed)
    weights = changed / "model.safetensors"
    weights.write_bytes(b"W" + weights.read_bytes()[1:])
    failed = subprocess.run([*tool[:3], str(changed), *tool[4:]], capture_output=True, text=True)
    assert failed.returncode == 1 and "Verification failed" in failed.stderr
    # A store writer who swaps the provenance for one of their own is refused by pull --verify.
    manifest = json.loads(
        (store.root / blob_key(Ledger(store).refresh().releases[("main", 1)].data["manifest"])).read_text()
    )
    provenance = store.root / blob_key(manifest["attestations"]["provenance.intoto.json"]["digest"])
    os.chmod(provenance, 0o644)
    provenance.write_text(provenance.read_text().replace('"payloadType"', '"payloadType" ', 1))
    refused = cli("pull", "v1", "--out", str(tmp_path / "again"), "--verify", "--store", str(store.root))
    assert refused.exit_code == 2 and "does not match its digest" in refused.stderr


def test_a_policy_rotation_drops_a_key_for_every_move_after_it(tmp_path: Path, keys: Keys) -> None:
    """Honest path: the owners rotate to a new owner and approvers; what the dropped key signed counts no more."""
    store = releases(LocalStore(tmp_path / "store"), 1)
    protect(store, keys, channels={"stable": ChannelRule(required=2)})
    approve(store, "main", 1, keys.signer("ana"), "stable")
    policy = tmp_path / "v2.yaml"
    policy.write_text(
        f"approvers:\n  bo: ['{keys.public('bo')}']\n  cy: ['{keys.public('cy')}']\n"
        f"channels:\n  stable: {{required: 2}}\ngate: ['{PIPELINE.public('gate')}']\n"
        f"owners: ['{keys.public('owner')}', '{keys.public('owner2')}']\nthreshold: 2\n"
    )
    alone = cli("policy", "set", str(policy), "--key", str(keys.path("owner2")), "--store", str(store.root))
    assert alone.exit_code == 2 and "policy v2 not written: needs 2 signature(s) of its own owners" in alone.stderr
    assert Ledger(store).refresh().ignored == {}  # refused before anything was written
    both = ["--key", str(keys.path("owner")), "--key", str(keys.path("owner2"))]
    assert cli("policy", "set", str(policy), *both, "--store", str(store.root)).exit_code == 0
    state = Ledger(store).refresh()
    assert state.policy is not None and state.policy.version == 2 and state.root == [keys.fingerprint("owner")]
    approve(store, "main", 1, keys.signer("bo"), "stable")  # ana's earlier approval no longer counts: 1 of 2
    assert Ledger(store).refresh().channel("main", "stable") is None
    with pytest.raises(TrustError, match="'ana' is not an approver in policy v2"):
        approve(store, "main", 1, keys.signer("ana"), "stable")
    approve(store, "main", 1, keys.signer("cy"), "stable")
    assert Ledger(store).refresh().channel("main", "stable") == 1


def test_a_rollback_under_a_threshold_of_two_moves_at_the_second_signature(tmp_path: Path, keys: Keys) -> None:
    store = releases(LocalStore(tmp_path / "store"), 2)
    protect(store, keys, channels={"stable": ChannelRule(required=2)})
    for version in (1, 2):
        for who in ("ana", "bo"):
            approve(store, "main", version, keys.signer(who), "stable")
    with pytest.raises(TrustError, match="recorded, not moved: 1 of the 2 approval"):
        rollback(store, "main", "stable", keys.signer("ana"), "v2 regressed")
    assert rollback(store, "main", "stable", keys.signer("bo"), "agreed").version == 1
    assert Ledger(store).refresh().channels[("main", "stable")] == [1, 2, 1]


def test_a_signed_verdict_counts_only_for_the_files_the_manifest_lists(tmp_path: Path, keys: Keys) -> None:
    """A store writer pairs a genuine signed verdict with other bytes: the released event claims the gated
    candidate's digest, the manifest lists the writer's files. Approvers see UNVERIFIED; stable stays shut."""
    store = releases(LocalStore(tmp_path / "store"), 1)
    protect(store, keys)
    genuine = Ledger(store).refresh().releases[("main", 1)]
    body = json.loads((store.root / blob_key(genuine.data["manifest"])).read_text())
    weights = tmp_path / "evil.safetensors"
    weights.write_bytes(b"a store writer's weights")
    digest = hash_file(weights)
    store.put_file(blob_key(digest), weights)
    body["files"]["model.safetensors"] = {"digest": digest, "size": weights.stat().st_size}
    evil = json.dumps(body).encode()
    manifest_digest = hashlib.sha256(evil).hexdigest()
    store.put_if_absent(blob_key(manifest_digest), evil)
    forge(store, "released", genuine.data | {"version": 2, "manifest": manifest_digest})  # the gated candidate's digest
    env = {"SHIPYARD_TRUST__OWNERS": json.dumps([keys.fingerprint("owner")])}
    done = cli("approve", "v2", "--key", str(keys.path("ana")), "--store", str(store.root), env=env)
    assert done.exit_code == 0, done.output
    assert "gate: UNVERIFIED" in done.stderr and "another candidate" in done.stderr
    assert Ledger(store).refresh().channel("main", "stable") is None


def test_a_store_writer_cannot_move_a_lines_place_in_its_stream(tmp_path: Path, keys: Keys) -> None:
    """The stream gate's level depends on the decision's number t and the blocks before it, counted from the
    ledger. Under a policy that names gate keys, only records whose verdict a gate key signed count, each decision
    once, each in its own line: forged, edited, replayed, foreign-line and wrongly signed records move nothing."""
    from shipyard.evals.stream import Position

    from shipyard.registry.approval_policy import sign_gate, stream_of_verdict, stream_records

    store = LocalStore(tmp_path / "store")
    protect(store, keys)
    gate_key = load_private(PIPELINE.path("gate"))

    def decided(t: int, blocked: bool, line: str = "main", key: Any = gate_key) -> dict[str, Any]:
        record = {"t": t, "e_value": 2.0, "level": 0.001, "blocked": blocked, "blocks_before": 0, "line": line}
        gate = {"passed": not blocked, "candidate_digest": f"c{t}", "items_digest": "i", "stream": record}
        return {"line": line, "step": t, "reason": "gated", **stream_of_verdict(sign_gate(gate, key, f"k{t}"))}

    def position() -> Position:
        ledger = Ledger(store)
        state = ledger.refresh()
        events = [dict(ledger.event(n).data) for n in range(1, state.events + 1)]
        return Position.after(stream_records(state.policy, events, "main"), "main")

    genuine = decided(1, blocked=False)
    forge(store, "gate_failed", genuine)  # as the pipeline records a signed decision
    assert position() == Position(2, 0, "main")
    forge(store, "gate_failed", genuine | {"step": 99})  # the same decision again
    forge(store, "gate_failed", {"line": "main", "step": 2, "stream": genuine["stream"] | {"t": 2}})  # no verdict
    edited = decided(2, blocked=True)
    forge(store, "gate_failed", edited | {"stream": edited["stream"] | {"t": 40}})  # changed after signing
    forge(store, "gate_failed", decided(2, blocked=True, line="other") | {"line": "main"})  # another line's
    forge(store, "released", decided(3, blocked=True, key=load_private(keys.path("ana"))))  # not the gate key
    assert position() == Position(2, 0, "main")
    forge(store, "gate_failed", decided(2, blocked=True))  # the next genuine decision counts
    assert position() == Position(3, 1, "main")


def test_a_verdict_signed_before_statements_named_the_stream_still_verifies_but_its_record_does_not_count(
    tmp_path: Path, keys: Keys
) -> None:
    from shipyard.registry.approval_policy import gate_signer, gate_statement, stream_records
    from shipyard.registry.signing import sign

    store = LocalStore(tmp_path / "store")
    policy = protect(store, keys)
    record = {"t": 1, "e_value": 2.0, "level": 0.001, "blocked": True, "blocks_before": 0, "line": "main"}
    gate = {"passed": True, "candidate_digest": "c1", "items_digest": "i", "stream": record}
    old = {k: v for k, v in gate_statement(gate, "k1").items() if k != "stream"}  # as the last version signed
    signed = gate | {"statement": old, "signature": sign(load_private(PIPELINE.path("gate")), "gate", old)}
    assert gate_signer(policy, signed, "c1") == (PIPELINE.fingerprint("gate"), "")
    assert gate_signer(policy, signed | {"passed": False}, "c1")[0] is None  # the verdict itself is still bound
    event = {"line": "main", "stream": record, "verdict": {"statement": old, "signature": signed["signature"]}}
    assert stream_records(policy, [event], "main") == []
