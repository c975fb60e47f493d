"""The flows on a real Prefect API (the test harness): releases, crash and rerun, approvals through the API."""

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run
from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.testing.utilities import prefect_test_harness
from shipyard.flows.approval import await_approval, rollback_release
from shipyard.flows.release_checkpoint import release_checkpoint
from shipyard.flows.watch_run import watch_run
from typer.testing import CliRunner

from shipyard.app.cli.main import app
from shipyard.checkpoints import Checkpoint
from shipyard.demo.profile import POLICY
from shipyard.errors import TrustError
from shipyard.intake.scan import scan
from shipyard.intake.sources import open_source
from shipyard.orchestration import pipeline
from shipyard.orchestration import prefect as orchestration
from shipyard.registry.approval_policy import DoorRule
from shipyard.registry.approvals import approve
from shipyard.registry.doors import hash_token
from shipyard.registry.ledger import Ledger
from shipyard.registry.publish import publish
from shipyard.registry.stores import LocalStore
from shipyard.settings import Settings, load_settings

from .helpers import PIPELINE, Keys, candidate, gated, protect
from .hub_server import HubServer

pytestmark = pytest.mark.slow
TOKENS = {"ana": "ana-door-token", "bo": "bo-door-token"}


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}), prefect_test_harness():
        yield


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Shipyard home for the module: its caches are shared, each test has its own release store."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys")


@pytest.fixture
def env(home: Path, tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A protected release store: ana and bo approve, the Prefect form's door may attest for both."""
    door = DoorRule(key=keys.public("prefect-ui"), attests=["ana", "bo"])
    protect(LocalStore(tmp_path / "releases"), keys, doors={"prefect-ui": door})
    monkeypatch.setenv("SHIPYARD_HOME", str(home))
    monkeypatch.setenv("SHIPYARD_RELEASE__STORE", str(tmp_path / "releases"))
    monkeypatch.setenv("SHIPYARD_APPROVAL__POLL_SECONDS", "1")
    monkeypatch.setenv("SHIPYARD_TRUST__OWNERS", json.dumps([keys.fingerprint("owner")]))
    monkeypatch.setenv("SHIPYARD_TRUST__DOOR_KEYS", json.dumps({"prefect-ui": str(keys.path("prefect-ui"))}))
    monkeypatch.setenv("SHIPYARD_TRUST__GATE_KEY", str(PIPELINE.path("gate")))
    monkeypatch.setenv("SHIPYARD_DASHBOARD__TOKENS", json.dumps({w: hash_token(t) for w, t in TOKENS.items()}))
    return tmp_path / "releases"


def checkpoint_of(rl_checkpoint: Path, home: Path) -> Checkpoint:
    [checkpoint] = [c for c in scan(open_source(str(rl_checkpoint.parent)), home / "snapshots") if c.step == 10]
    return checkpoint


def task_states(flow_run_id: UUID, names: set[str], timeout: float = 20.0) -> dict[str, str]:
    """Task name → state name of a flow run's task runs (they reach the API a little after the flow returns)."""
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            )
        states = {r.task_key.split("-")[0]: r.state.name for r in runs if r.state and r.state.is_final()}
        if names <= set(states) or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


@pytest.mark.usefixtures("prefect_api", "hub_online")
def test_crash_mid_release_then_rerun_redoes_no_stage_and_publishes_once(
    rl_checkpoint: Path, home: Path, env: Path, monkeypatch: pytest.MonkeyPatch, hub_server: HubServer
) -> None:
    """...and mirrors the release to the Hub once, when `hub.mirror_repo` is set."""
    monkeypatch.setenv("SHIPYARD_HUB__MIRROR_REPO", "lab/flows")
    monkeypatch.setenv("SHIPYARD_HUB__ENDPOINT", hub_server.url)
    checkpoint = checkpoint_of(rl_checkpoint, home)
    real_gate = pipeline.gate_candidate

    def crash(*args: Any) -> Any:
        raise SystemError("the machine went away during the gate")

    monkeypatch.setattr(pipeline, "gate_candidate", crash)
    crashed = release_checkpoint(checkpoint.as_dict(), return_state=True)
    assert crashed.is_failed()
    assert task_states(crashed.state_details.flow_run_id, {"post_train"})["post_train"] == "Completed"

    monkeypatch.setattr(pipeline, "gate_candidate", real_gate)
    rerun = release_checkpoint(checkpoint.as_dict(), return_state=True)
    assert rerun.result()["version"] == 1
    states = task_states(rerun.state_details.flow_run_id, {"screen", "post_train", "gate", "publish"})
    assert (states["screen"], states["post_train"], states["gate"]) == ("Cached", "Cached", "Completed")

    again = release_checkpoint(checkpoint.as_dict(), return_state=True)
    assert again.result()["version"] == 1
    states = task_states(again.state_details.flow_run_id, {"screen", "post_train", "gate", "publish"})
    assert [states[name] for name in ("screen", "post_train", "gate")] == ["Cached"] * 3
    state = Ledger(LocalStore(env)).refresh()
    assert list(state.releases) == [("main", 1)]
    hub = hub_server.repos["lab/flows"]
    assert [hub.titles[sha] for sha in hub.commits] == ["initial commit", "main v1"] and set(hub.tags) == {"v1"}
    assert [(e["version"], e["repo"]) for e in state.mirrors] == [(1, "lab/flows")]  # mirrored once, three runs

    with get_client(sync_client=True) as client:
        artifacts = {a.key for a in client.read_artifacts() if a.key}
    assert {"gate-checks-main-step-10", "gate-report-main-step-10", "release-main-step-10"} <= artifacts


@pytest.mark.usefixtures("prefect_api")
def test_watch_flow_releases_each_selected_checkpoint_once(rl_checkpoint: Path, home: Path, env: Path) -> None:
    first = watch_run(source=str(rl_checkpoint.parent))
    assert [(o["step"], o["state"], o["version"]) for o in first] == [(10, "released", 1)]
    assert watch_run(source=str(rl_checkpoint.parent)) == []
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name("shipyard-training")
    assert limit.limit == 1  # the training slot exists, so the strict slot in the release flow can be taken


@pytest.mark.usefixtures("prefect_api")
def test_a_release_that_fails_in_place_is_a_failed_fate_and_the_watch_goes_on(
    rl_checkpoint: Path, tmp_path: Path, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`shipyard watch` runs the release flow as a subflow: a stage that raises must not stop the poll, nor block
    the run's later checkpoints by being taken again forever."""
    shutil.copytree(rl_checkpoint, tmp_path / "run" / "checkpoint-10")

    def broken(*args: Any) -> Any:
        raise RuntimeError("CUDA out of memory while screening")

    monkeypatch.setattr(pipeline, "screen", broken)
    [outcome] = watch_run(source=str(tmp_path / "run"))
    assert outcome["state"] == "failed" and "CUDA out of memory while screening" in outcome["reason"]
    assert watch_run(source=str(tmp_path / "run")) == []  # not taken again: the poll is free for the next one
    _, events = Ledger(LocalStore(env)).snapshot()
    [failed] = [e for e in events if e.type == "failed"]
    assert failed.data["step"] == 10 and "release run step-10 failed" in failed.data["reason"]


def published(store_dir: Path, tiny_model_dir: Path) -> LocalStore:
    store = LocalStore(store_dir)
    publish(gated(store_dir.parent / "candidate", tiny_model_dir), "main", store)
    return store


def wait_paused(version: int, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = orchestration.waiting_approval("main", version)
        if run is not None:
            return run
        time.sleep(0.3)
    raise AssertionError("the approval run never paused")


def start_approval(version: int) -> tuple[threading.Thread, list[str]]:
    result: list[str] = []
    tags = orchestration.approval_tags("main", version)
    waiting = await_approval.with_options(flow_run_name=f"approve-v{version}")

    def run() -> None:
        from prefect import tags as prefect_tags

        with prefect_tags(*tags):
            result.append(waiting("main", version))

    thread = threading.Thread(target=run, daemon=True)  # a failed test must not leave pytest waiting on it
    thread.start()
    return thread, result


@pytest.mark.usefixtures("prefect_api")
def test_cli_approval_resumes_the_waiting_run_and_writes_one_event(tiny_model_dir: Path, env: Path, keys: Keys) -> None:
    store = published(env, tiny_model_dir)
    thread, result = start_approval(1)
    run = wait_paused(1)
    stranger = CliRunner().invoke(app, ["approve", "v1", "--key", str(keys.path("eve"))])
    assert stranger.exit_code == 2 and "belongs to no approver" in stranger.output
    posing = CliRunner().invoke(app, ["approve", "v1", "--key", str(keys.path("bo")), "--as", "ana"])
    assert posing.exit_code == 2 and "is bo's, not ana's" in posing.output
    ana = ["--key", str(keys.path("ana"))]
    approved = CliRunner().invoke(app, ["approve", "v1", *ana, "--note", "gate is clean"])
    assert approved.exit_code == 0, approved.output
    thread.join(timeout=60)
    assert result == ["v1 is on stable"]
    ledger = Ledger(store)
    events = [ledger.event(n) for n in range(1, ledger.refresh().events + 1)]
    assert [(e.type, e.data.get("by"), e.data.get("door")) for e in events] == [
        ("policy", None, None),
        ("released", None, None),
        ("approved", "ana", "cli"),
        ("promoted", None, None),
    ]
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run.id).state_type == StateType.COMPLETED


@pytest.mark.usefixtures("prefect_api")
def test_the_form_takes_only_an_authenticated_decision(tiny_model_dir: Path, env: Path) -> None:
    """Anyone can resume a paused run through the Prefect API; only a valid door token makes it decide."""
    store = published(env, tiny_model_dir)
    thread, result = start_approval(1)
    run = wait_paused(1)
    anonymous = httpx.post(
        f"{PREFECT_API_URL.value()}/flow_runs/{run.id}/resume",
        json={"run_input": {"decision": "approve", "approver": "ana", "note": "typed name, no token"}},
    )
    assert anonymous.is_success and anonymous.json()["status"] == "ACCEPT"
    run = wait_paused(1)  # woken, it re-read the ledger and waits again: nothing recorded
    resume_flow_run(run.id, run_input={"decision": "approve", "approver": "ana", "token": TOKENS["bo"]})
    run = wait_paused(1)  # bo's token for ana: refused and logged
    resume_flow_run(run.id, run_input={"decision": "approve", "approver": "ana", "token": TOKENS["ana"]})
    thread.join(timeout=60)
    assert result == ["v1 is on stable"]
    state = Ledger(store).refresh()
    assert [(e["type"], e["by"], e["door"]) for e in state.approvals[("main", 1)]] == [
        ("approved", "ana", "prefect-ui")
    ]
    assert state.ignored == {} and state.channel("main", "stable") == 1


@pytest.mark.usefixtures("prefect_api", "hub_online")
def test_the_rollback_flow_moves_a_protected_channel_only_through_a_door(
    env: Path, keys: Keys, tmp_path: Path, hub_server: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stable moves back only with an approver's door token, signed by the `prefect-ui` door; the Hub follows."""
    store = LocalStore(env)
    for version in (1, 2):
        publish(candidate(tmp_path / f"v{version}", weights=b"weights %d" % version), "main", store)
        approve(store, "main", version, keys.signer("ana"), "stable")
    monkeypatch.setenv("SHIPYARD_HUB__MIRROR_REPO", "lab/rollback")
    monkeypatch.setenv("SHIPYARD_HUB__ENDPOINT", hub_server.url)
    with pytest.raises(TrustError, match="signed by an approver"):
        rollback_release("main")
    with pytest.raises(TrustError, match="no valid door token for 'ana'"):
        rollback_release("main", approver="ana", token=TOKENS["bo"])
    with pytest.raises(TrustError, match="no valid door token for 'eve'"):
        rollback_release("main", approver="eve", token="guess")
    assert Ledger(store).refresh().channels[("main", "stable")] == [1, 2]  # nothing moved, nothing recorded
    assert rollback_release("main", note="v2 regressed", approver="bo", token=TOKENS["bo"]) == 1
    state = Ledger(store).refresh()
    assert state.channels[("main", "stable")] == [1, 2, 1]
    ledger = Ledger(store)
    [event] = [e for e in map(ledger.event, range(1, state.events + 1)) if e.type == "rolled_back"]
    assert (event.data["by"], event.data["door"], event.data["note"]) == ("bo", "prefect-ui", "v2 regressed")
    hub = hub_server.repos["lab/rollback"]
    assert hub.branches["stable"] == hub.tags["v1"]  # the Hub's stable branch followed the rollback


@pytest.mark.usefixtures("prefect_api")
def test_release_runs_through_a_deployment_are_idempotent(rl_checkpoint: Path, home: Path, env: Path) -> None:
    deployment_id = release_checkpoint.to_deployment("test").apply()
    assert deployment_id
    name = "release-checkpoint/test"
    older = checkpoint_of(rl_checkpoint, home)
    first = orchestration.start_release_run(name, "main", older, None)
    assert orchestration.start_release_run(name, "main", older, None).id == first.id  # offered twice, one run
    newer = Checkpoint(**{**older.as_dict(), "step": 20, "digest": "f" * 64, "uri": older.uri + "-newer"})
    second = orchestration.start_release_run(name, "main", newer, None)
    assert second.id != first.id  # another checkpoint's content: its own run
    assert getattr(orchestration.release_run("main", older), "id", None) == first.id
    assert getattr(orchestration.release_run("main", newer), "state_type", None) == StateType.SCHEDULED


def test_settings_know_the_flow_knobs() -> None:
    settings = load_settings(None, pipeline={"release_deployment": "release-checkpoint/x"})
    assert settings.pipeline.slot == "shipyard-training" and settings.approval.channel == "stable"
    assert isinstance(Settings().notify.events, list)


@pytest.mark.usefixtures("prefect_api")
def test_one_watch_deployment_follows_two_runs_each_on_its_own_line_and_policy(
    rl_checkpoint: Path, home: Path, env: Path, tmp_path: Path
) -> None:
    for name in ("a", "b"):
        shutil.copytree(rl_checkpoint, tmp_path / name / "checkpoint-10")
    strict = tmp_path / "strict.yaml"  # run b's policy: a floor no checkpoint of the demo reaches
    strict.write_text(POLICY.read_text().replace("exact_match, min: 0.3", "exact_match, min: 0.99"))
    config = tmp_path / "shipyard.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "runs": [
                    {"name": "a", "source": "a", "line": "run-a"},
                    {"name": "b", "source": "b", "line": "run-b", "policy": "strict.yaml"},
                ]
            }
        )
    )
    outcomes = watch_run(config=str(config))
    assert [(o["step"], o["state"], o["version"]) for o in outcomes] == [(10, "released", 1), (10, "gate_failed", None)]
    ledger = Ledger(LocalStore(env)).refresh()
    assert list(ledger.releases) == [("run-a", 1)]
    assert "shipyard_arithmetic_heldout" in outcomes[1]["reason"]
    assert watch_run(config=str(config)) == []  # each run's own watch state: nothing new in either


def test_paths_cross_pools_as_paths_in_the_shared_home_and_a_stage_result_comes_back_through_it(tmp_path: Path) -> None:
    from shipyard.errors import OrchestrationError
    from shipyard.orchestration.crossing import read_stage_result, rebase, write_stage_result

    shared = tmp_path / "volume"
    (shared / "candidates").mkdir(parents=True)
    light, gpu = tmp_path / "vm" / "shipyard", tmp_path / "pod" / "home"
    for mount in (light, gpu):
        mount.parent.mkdir(parents=True)
        mount.symlink_to(shared)
    sent = {"path": f"{light}/snapshots/ab", "uri": "s3://bucket/run/checkpoint-5", "step": 5, "also": f"{shared}/x"}
    assert rebase(sent, light, gpu) == {**sent, "path": f"{gpu}/snapshots/ab", "also": f"{gpu}/x"}
    assert rebase([f"{light}x/elsewhere", None, (1, str(light))], light, gpu) == [
        f"{light}x/elsewhere",
        None,
        [1, str(gpu)],
    ]
    write_stage_result(gpu, "run-1", (True, "", f"{gpu}/gates/r1"))
    assert read_stage_result(light, "run-1", "gate") == [True, "", f"{light}/gates/r1"]
    with pytest.raises(OrchestrationError, match=r"left no result .* the same Shipyard home"):
        read_stage_result(light, "run-2", "gate")
