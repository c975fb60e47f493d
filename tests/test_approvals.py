"""Approvals under the store's signed policy: signed words, N distinct approvers, doors, vetoes, ungated releases."""

from pathlib import Path

import pytest

from shipyard.errors import ConfigError, TrustError
from shipyard.registry.approval_policy import ChannelRule, DoorRule
from shipyard.registry.approvals import approve, approvers_of, promote_approved, reject, rollback
from shipyard.registry.ledger import Ledger
from shipyard.registry.publish import publish
from shipyard.registry.stores import LocalStore

from .helpers import PIPELINE, Keys, candidate, protect


def released(store: LocalStore, version: int = 1, ungated: str | None = None) -> LocalStore:
    """`store` with its next release, a small candidate gated and signed by the tests' pipeline key."""
    model = candidate(store.root.parent / f"{store.root.name}-c{version}", f"weights {version}".encode())
    assert publish(model, "main", store, ungated=ungated).release.version == version
    return store


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys")


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return released(LocalStore(tmp_path / "store"))


def test_two_distinct_signed_approvals_promote(store: LocalStore, keys: Keys) -> None:
    protect(store, keys, channels={"stable": ChannelRule(required=2)})
    assert [e.type for e in approve(store, "main", 1, keys.signer("ana"), "stable", "looks good")] == ["approved"]
    assert approve(store, "main", 1, keys.signer("ana"), "stable") == []  # the same person twice counts once
    assert [e.type for e in approve(store, "main", 1, keys.signer("bo"), "stable")] == ["approved", "promoted"]
    state = Ledger(store).refresh()
    assert state.channel("main", "stable") == 1 and approvers_of(state, "main", 1) == ["ana", "bo"]
    assert state.ignored == {}
    approval = state.approvals[("main", 1)][0]
    release = state.releases[("main", 1)]
    assert approval["manifest"] == release.data["manifest"] and approval["signature"]["key"].startswith("ssh-ed25519 ")
    assert approval["store"] == state.store_id and approval["from_version"] is None and approval["channel"] == "stable"
    assert approval["gated_by"] == PIPELINE.fingerprint("gate")


def test_strangers_wrong_keys_and_doors_beyond_their_list_are_refused(store: LocalStore, keys: Keys) -> None:
    protect(store, keys, doors={"dashboard": DoorRule(key=keys.public("door"), attests=["ana"])})
    with pytest.raises(TrustError, match="'eve' is not an approver"):
        approve(store, "main", 1, keys.signer("eve"), "stable")
    with pytest.raises(TrustError, match="gives neither to 'ana'"):
        approve(store, "main", 1, keys.signer("ana", key="eve"), "stable")  # ana's name, eve's key
    with pytest.raises(TrustError, match="door 'dashboard' may not attest for 'bo'"):
        approve(store, "main", 1, keys.signer("bo", "dashboard", key="door"), "stable")
    with pytest.raises(ConfigError, match="needs a note"):
        reject(store, "main", 1, keys.signer("ana"), "")
    assert Ledger(store).refresh().events == 2  # the release and the policy: nothing refused was written
    events = approve(store, "main", 1, keys.signer("ana", "dashboard", key="door"), "stable")
    assert [e.type for e in events] == ["approved", "promoted"]


def test_a_rejection_is_a_veto_unless_the_policy_says_otherwise(tmp_path: Path, keys: Keys) -> None:
    vetoing = released(LocalStore(tmp_path / "a"))
    protect(vetoing, keys)
    reject(vetoing, "main", 1, keys.signer("bo"), "over-refuses benign requests")
    assert [e.type for e in approve(vetoing, "main", 1, keys.signer("ana"), "stable")] == ["approved"]
    with pytest.raises(TrustError, match="rejected by bo"):
        promote_approved(vetoing, "main", 1, "stable")
    assert Ledger(vetoing).refresh().channel("main", "stable") is None
    lenient = released(LocalStore(tmp_path / "b"))
    protect(lenient, keys, veto=False)
    reject(lenient, "main", 1, keys.signer("bo"), "not sure")
    assert [e.type for e in approve(lenient, "main", 1, keys.signer("ana"), "stable")] == ["approved", "promoted"]


def test_ungated_releases_stay_off_channels_that_forbid_them(store: LocalStore, keys: Keys) -> None:
    released(store, 2, ungated="hotfix for a tokenizer bug")
    protect(store, keys, channels={"stable": ChannelRule(), "beta": ChannelRule(allow_ungated=True)})
    assert [e.type for e in approve(store, "main", 2, keys.signer("ana"), "stable")] == ["approved"]
    with pytest.raises(TrustError, match="ungated"):
        promote_approved(store, "main", 2, "stable")
    assert [e.type for e in approve(store, "main", 2, keys.signer("ana"), "beta")] == ["approved", "promoted"]
    assert promote_approved(store, "main", 2, "candidate") == 2  # an unprotected channel moves without signatures


def test_a_protected_rollback_needs_an_approvers_signature(store: LocalStore, keys: Keys) -> None:
    released(store, 2)
    protect(store, keys)
    approve(store, "main", 1, keys.signer("ana"), "stable")
    approve(store, "main", 2, keys.signer("ana"), "stable")
    with pytest.raises(TrustError, match="signed by an approver"):
        rollback(store, "main", "stable", None)
    assert rollback(store, "main", "stable", keys.signer("bo"), "v2 regressed").version == 1
    assert Ledger(store).refresh().channels[("main", "stable")] == [1, 2, 1]


def test_without_a_policy_nothing_can_be_approved(store: LocalStore, keys: Keys) -> None:
    with pytest.raises(TrustError, match="no signed policy"):
        approve(store, "main", 1, keys.signer("ana"), "stable")
