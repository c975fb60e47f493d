"""Safe by default: a reader that pins no owners refuses a protected store (until `shipyard trust pin` or an
explicit opt-out), and every move on a store with no signed policy says that it is open; stable stays put there.

Each point through the real commands: the CLI, `doctor`, the dashboard app and the promotion flow.
"""

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shipyard.app.cli.main import app
from shipyard.errors import TrustError
from shipyard.registry.ledger import Ledger
from shipyard.registry.publish import publish
from shipyard.registry.stores import LocalStore

from .helpers import Keys, candidate, protect

runner = CliRunner()


def cli(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input)


def two_releases(root: Path) -> LocalStore:
    store = LocalStore(root / "store")
    for version in (1, 2):
        publish(candidate(root / f"c{version}", f"w{version}".encode()), "main", store)
    return store


@pytest.fixture
def protected(tmp_path: Path) -> tuple[LocalStore, Keys]:
    store = two_releases(tmp_path)
    keys = Keys(tmp_path / "keys")
    protect(store, keys, approvers=("ana",))
    return store, keys


def test_a_reader_that_pins_no_owner_refuses_a_protected_store_in_one_line(
    protected: tuple[LocalStore, Keys], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, keys = protected
    owner = keys.fingerprint("owner")
    where = ["--store", str(store.root)]
    for command in (["releases", "list"], ["pull", "v1", "--out", str(tmp_path / "out")], ["ledger", "verify"]):
        refused = cli(*command, *where)
        assert refused.exit_code != 0, command
        assert owner in refused.stderr and f'trust: {{owners: ["{owner}"]}}' in refused.stderr, command
        assert "shipyard trust pin" in refused.stderr
    assert not (tmp_path / "out").exists()
    one_line = cli("releases", "list", *where)
    assert len(one_line.stderr.strip().splitlines()) == 1
    monkeypatch.setenv("SHIPYARD_TRUST__ALLOW_UNPINNED", "1")  # a job that knows what it reads
    assert cli("releases", "list", *where).exit_code == 0
    assert cli("ledger", "verify", *where).exit_code == 0


def test_the_dashboard_and_the_flows_refuse_an_unpinned_read_too(
    protected: tuple[LocalStore, Keys], tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from flows.approval import promote_release
    from shipyard.app.dashboard.app import create_app
    from shipyard.settings import Settings

    store, keys = protected
    unpinned = Settings(home=tmp_path / "home", dashboard={"open_read": True})
    page = TestClient(create_app(unpinned, store)).get("/")
    assert page.status_code == 403 and keys.fingerprint("owner") in page.text and "trust pin" in page.text
    owners = {"owners": [keys.fingerprint("owner")]}
    pinned = Settings(home=tmp_path / "home", dashboard={"open_read": True}, trust=owners)
    assert TestClient(create_app(pinned, store)).get("/").status_code == 200
    config = tmp_path / "reader.yaml"
    config.write_text(f"home: {tmp_path / 'home'}\nrelease: {{store: {store.root}}}\n")
    with pytest.raises(TrustError, match="pins no owners"):
        promote_release.fn(line="main", version=1, channel="canary", config=str(config))
    assert Ledger(store).refresh().channel("main", "canary") is None


def test_trust_pin_shows_the_owners_and_pins_them_only_when_confirmed(
    protected: tuple[LocalStore, Keys], tmp_path: Path
) -> None:
    store, keys = protected
    owner = keys.fingerprint("owner")
    config = tmp_path / "shipyard.yaml"
    config.write_text(f"# my reader\nrelease:\n  store: {store.root}  # the lab's store\n")
    declined = cli("trust", "pin", input="n\n")
    assert declined.exit_code == 1 and owner in declined.stdout and "owner" in declined.stdout
    assert "owners" not in config.read_text()  # nothing pinned without a yes
    done = cli("trust", "pin", input="y\n")
    assert done.exit_code == 0, done.output
    text = config.read_text()
    assert "# my reader" in text and "# the lab's store" in text  # the user's comments stay
    assert cli("config", "--json").exit_code == 0
    assert json.loads(cli("config", "--json").stdout)["trust"]["owners"] == [owner]
    assert cli("releases", "list").exit_code == 0
    assert "pinned already" in cli("trust", "pin").stdout
    other = two_releases(tmp_path / "other")
    protect(other, Keys(tmp_path / "other-keys"))
    swapped = cli("trust", "pin", "--yes", "--store", str(other.root))
    assert swapped.exit_code == 2 and "changed by hand" in swapped.stderr  # a pin is never replaced by a command
    assert json.loads(cli("config", "--json").stdout)["trust"]["owners"] == [owner]
    fresh = tmp_path / "fresh.yaml"
    assert cli("trust", "pin", "--yes", "--store", str(store.root), "--config", str(fresh)).exit_code == 2  # missing
    fresh.write_text("")
    assert cli("trust", "pin", "--yes", "--store", str(store.root), "--config", str(fresh)).exit_code == 0
    open_store = two_releases(tmp_path / "open")
    nothing = cli("trust", "pin", "--yes", "--store", str(open_store.root), "--config", str(fresh))
    assert nothing.exit_code == 2 and "open store" in nothing.stderr


def test_every_move_on_an_open_store_says_so_and_stable_stays_put(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    where = ["--store", str(store.root)]
    published = cli("publish", "--model", str(candidate(tmp_path / "c1", b"w1")), *where)
    assert published.exit_code == 0, published.output
    warning = "is an open store: no signed policy, so anyone who can write to it can move any channel"
    assert warning in published.stderr and "shipyard policy set" in published.stderr
    publish(candidate(tmp_path / "c2", b"w2"), "main", store)
    canary = cli("promote", "v1", "--channel", "canary", *where)
    assert canary.exit_code == 0 and warning in canary.stderr
    assert cli("promote", "v2", "--channel", "canary", *where).exit_code == 0
    back = cli("rollback", "--channel", "canary", *where)
    assert back.exit_code == 0 and warning in back.stderr
    refused = cli("promote", "v1", "--channel", "stable", *where)
    assert refused.exit_code == 2 and "stable does not move on an open store" in refused.stderr
    assert Ledger(store).refresh().channel("main", "stable") is None
    (tmp_path / "shipyard.yaml").write_text("trust: {open_store_refuses: []}\n")  # a sandbox that chose so
    assert cli("promote", "v1", "--channel", "stable", *where).exit_code == 0
    assert cli("promote", "v2", "--channel", "stable", *where).exit_code == 0
    (tmp_path / "shipyard.yaml").unlink()
    no_back = cli("rollback", "--channel", "stable", *where)
    assert no_back.exit_code == 2 and "stable does not move on an open store" in no_back.stderr
    assert Ledger(store).refresh().channel("main", "stable") == 2
    undecided = cli("approve", "v2", "--key", str(Keys(tmp_path / "keys").path("ana")), *where)
    assert undecided.exit_code == 2 and "no signed policy" in undecided.stderr


def test_doctor_fails_an_open_store_and_the_dashboard_shows_a_banner(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from shipyard.app.dashboard.app import create_app
    from shipyard.settings import Settings

    store = two_releases(tmp_path)
    (tmp_path / "shipyard.yaml").write_text(f"release: {{store: {store.root}}}\n")
    doctor = cli("doctor", "--json")
    policy = next(c for c in json.loads(doctor.stdout) if c["name"] == "policy")
    assert doctor.exit_code == 1 and policy["status"] == "fail" and "open store" in policy["detail"]
    settings = Settings(home=tmp_path / "home", dashboard={"open_read": True})
    for path in ("/", "/releases/1"):
        page = TestClient(create_app(settings, store)).get(path)
        assert page.status_code == 200 and 'id="open-store"' in page.text and "shipyard policy set" in page.text
    keys = Keys(tmp_path / "keys")
    protect(store, keys)
    owners = {"owners": [keys.fingerprint("owner")]}
    pinned = Settings(home=tmp_path / "home2", dashboard={"open_read": True}, trust=owners)
    page = TestClient(create_app(pinned, store)).get("/")
    assert page.status_code == 200 and 'id="open-store"' not in page.text
    (tmp_path / "shipyard.yaml").write_text(
        f"release: {{store: {store.root}}}\ntrust: {{owners: [{json.dumps(keys.fingerprint('owner'))}]}}\n"
    )
    fine = {c["name"]: c for c in json.loads(cli("doctor", "--json").stdout)}
    assert fine["policy"]["status"] == "ok"
