"""The dashboard in a real browser (Debian's chromium, headless, driven by Playwright) against a ledger of releases."""

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from shipyard.app.dashboard.app import create_app
from shipyard.app.dashboard.auth import COOKIE
from shipyard.checkpoints import Checkpoint
from shipyard.events import EventType
from shipyard.registry.approval_policy import DoorRule
from shipyard.registry.approvals import approve
from shipyard.registry.doors import hash_token
from shipyard.registry.ledger import Ledger
from shipyard.registry.publish import publish
from shipyard.registry.releases import Registry
from shipyard.registry.stores import LocalStore
from shipyard.settings import Settings

from .helpers import Keys, gated, protect

pytestmark = pytest.mark.browser
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[1] / "test-artifacts"
TOKEN = "ana-secret-token"
# What an attacker who can write a gate report puts into it: a script that approves when an approver opens the page.
XSS = (
    "<script>fetch('/releases/3/approve',{method:'POST',body:'csrf='+document.querySelector('[name=csrf]').value})"
    "</script><img src=x onerror=alert(1)> | [x](javascript:alert(1))"
)


def release_of(tiny_model_dir: Path, out: Path, step: int, accuracy: float, detail: str = "") -> Path:
    shutil.copytree(tiny_model_dir, out)
    (out / "config.json").write_text((tiny_model_dir / "config.json").read_text() + " " * step)
    checks = [{"name": "floor: arith", "passed": True, "detail": detail or f"{accuracy} ≥ 0.3"}]
    flips = [{"task": XSS, "direction": "lost", "prompt": XSS, "candidate": "", "champion": ""}]
    suites = {"capability": ["arith", XSS], "safety": ["refusal_harmful"]} if step > 40 else {}  # v1: an older report
    gated(out, checks=checks, flips=flips, **({"suites": suites} if suites else {}))
    evals = {"arith": {"exact_match": accuracy}, "refusal_harmful": {"refusal": 0.9}, XSS: {"exact_match": 0.5}}
    (out / "evals.json").write_text(json.dumps(evals))
    lineage = {"run": "runs/demo", "step": step, "checkpoint_digest": f"c{step}", "metrics": {"reward": step / 200}}
    screen = {"passed": True, "seconds": 3.0} | ({"estimate": 0.02} if step > 40 else {})  # v1: no champion yet
    (out / "lineage.json").write_text(json.dumps(lineage | {"screen": screen}))
    return out


@pytest.fixture(scope="module")
def dashboard(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, LocalStore]]:
    """A dashboard on 127.0.0.1 over a store with v1 (stable, approved by bo), v2 and v3 pending."""
    tmp = tmp_path_factory.mktemp("dashboard")
    store, keys = LocalStore(tmp / "store"), Keys(tmp / "keys")
    protect(store, keys, doors={"dashboard": DoorRule(key=keys.public("door"), attests=["ana"])})
    for step, accuracy in ((40, 0.5), (80, 0.6), (100, 0.7)):
        detail = XSS if step == 100 else ""
        publish(release_of(tiny_model_dir, tmp / f"m{step}", step, accuracy, detail), "main", store)
    settings = Settings(
        home=tmp / "home",
        dashboard={"tokens": {"ana": hash_token(TOKEN), "bo": hash_token("bo-token")}, "secret": "test-secret"},
        trust={"owners": [keys.fingerprint("owner")], "door_keys": {"dashboard": keys.path("door")}},
    )
    approve(store, "main", 1, keys.signer("bo"), "stable", "first")
    turned = Checkpoint("runs/demo", "demo", 60, "transformers", "runs/demo/checkpoint-60", "complete", digest="c60")
    screen = {"passed": False, "estimate": -0.2, "seconds": 3.0}
    Registry.open(settings, store, "main").record_fate(EventType.SKIPPED, turned, "screening: worse", screen=screen)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings, store), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", store
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield launched
        launched.close()


def test_pages_show_versions_and_channels(dashboard: tuple[str, LocalStore], browser: object) -> None:
    url, _ = dashboard
    page = browser.new_page()  # type: ignore[attr-defined]
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(url)
    assert "stable" in page.inner_text("#channels") and "v1" in page.inner_text("#channels")
    assert "bo" in page.inner_text("#channels")
    releases = page.inner_text("#releases")
    assert releases.index("v3") < releases.index("v2") < releases.index("v1")
    assert "v2" in page.inner_text("#pending") and "v3" in page.inner_text("#pending")
    for suite in ("capability", "safety", "evals"):  # v1's report names no suites: its scores plot as "evals"
        assert page.locator(f"svg[aria-label^='suite {suite}']").count() == 1, suite
    heads = page.locator("svg[aria-label^='suite capability'] text").all_text_contents()
    assert "v1 stable" in heads and "v3" in heads  # each release marked, the channel heads named
    pending = page.inner_text("#pending")
    assert "signed by the pipeline's key SHA256:" in pending and "0 of the 1 approval(s) stable needs" in pending
    assert page.locator("svg[aria-label^='the RL run'] polyline").count() == 1  # train reward by step
    page.screenshot(path=str(ARTIFACTS / "dashboard-index.png"), full_page=True)
    page.goto(f"{url}/releases/2")
    assert "floor: arith" in page.inner_text("#evidence") and "+0.100" in page.inner_text("#evidence")
    assert "shipyard pull v2" in page.inner_text("body")
    page.screenshot(path=str(ARTIFACTS / "dashboard-release.png"), full_page=True)
    page.goto(f"{url}/stream")
    assert "released as v3" in page.inner_text("#stream")
    screening = page.inner_text("#screening")  # the screen-out rate, from the screens the fates recorded
    assert "4 screened (3 against the champion's raw checkpoint) in 12 s; 1 turned away" in screening
    assert "(25%)" in screening


def test_an_approver_signs_in_approves_and_sees_the_channel_move(
    dashboard: tuple[str, LocalStore], browser: object
) -> None:
    url, store = dashboard
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(f"{url}/login")
    page.fill("#name", "ana")
    page.fill("#token", "wrong")
    page.click("#sign-in")
    assert "wrong token" in page.inner_text("#flash")
    page.fill("#name", "bo")  # bo has a token, but the policy does not let this door attest for him
    page.fill("#token", "bo-token")
    page.click("#sign-in")
    assert "wrong token" in page.inner_text("#flash")
    page.fill("#name", "ana")
    page.fill("#token", TOKEN)
    page.click("#sign-in")
    assert page.inner_text("#user") == "ana"
    page.fill("#pending tr:has-text('v2') input[name=note]", "gate is clean")
    page.click("#approve-v2")
    assert page.inner_text("#flash") == "Approved."
    assert "v2" in page.inner_text("#channels tr:has-text('stable')")
    moved = page.inner_text("#channel-history tr:has-text('v2')")  # who moved it, from where, and why
    assert all(word in moved for word in ("stable", "promoted", "v1", "ana", "ana: gate is clean")), moved
    page.screenshot(path=str(ARTIFACTS / "dashboard-approved.png"), full_page=True)
    page.goto(f"{url}/releases/3")  # a decision can be made from the release page, which says what it waits for
    assert page.inner_text("#waiting") == "Not on stable yet: 0 of the 1 approval(s) stable needs."
    assert page.locator("#approve-v3").count() == 1 and page.locator("#reject-v3").count() == 1
    state = Ledger(store).refresh()
    assert state.channel("main", "stable") == 2
    assert [(a["by"], a["door"], a["note"]) for a in state.approvals[("main", 2)]] == [
        ("ana", "dashboard", "gate is clean")
    ]
    assert state.ignored == {}


def test_a_script_in_a_gate_report_runs_nowhere(dashboard: tuple[str, LocalStore], browser: object) -> None:
    """v3's gate detail, eval task and flipped item carry a script that would approve v3 for whoever opens it."""
    url, store = dashboard
    before = Ledger(store).refresh().events
    page = browser.new_page()  # type: ignore[attr-defined]
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{url}/login")
    page.fill("#name", "ana")
    page.fill("#token", TOKEN)
    page.click("#sign-in")
    response = page.goto(f"{url}/releases/3")
    assert "script-src" not in response.headers["content-security-policy"]  # default-src 'none': no script at all
    assert "<script>fetch" in page.inner_text("#evidence")  # shown as text
    assert page.locator("script").count() == 0 and page.locator("#evidence img").count() == 0
    assert page.locator("a[href^='javascript']").count() == 0
    page.goto(url)
    time.sleep(0.5)
    assert dialogs == [] and Ledger(store).refresh().events == before


def test_unauthenticated_and_forged_requests_are_refused(dashboard: tuple[str, LocalStore]) -> None:
    url, store = dashboard
    before = Ledger(store).refresh().events
    anonymous = httpx.post(f"{url}/releases/3/approve", data={"csrf": "x"})
    assert anonymous.status_code == 403
    with httpx.Client(base_url=url) as client:
        form = client.get("/login")
        csrf = form.text.split('name="csrf" value="')[1].split('"')[0]
        signed = client.post("/login", data={"csrf": csrf, "name": "ana", "token": TOKEN})
        assert signed.status_code == 303 and COOKIE in client.cookies
        forged = client.post("/releases/3/approve", data={"csrf": "not-the-token", "note": ""})
        assert forged.status_code == 403 and "CSRF" in forged.text
        session_csrf = client.get("/").text.split('name="csrf" value="')[1].split('"')[0]
        silent = client.post("/releases/3/reject", data={"csrf": session_csrf, "note": " "})
        assert silent.status_code == 400 and "needs a note" in silent.text
        no_login_csrf = httpx.post(f"{url}/login", data={"name": "ana", "token": TOKEN})
        assert no_login_csrf.status_code == 403
        bogus = client.get("/?flash=<b>Your+session+expired,+log+in+at+evil.example</b>")
        assert "evil.example" not in bogus.text  # flash messages come from a fixed set
        cookie = client.cookies[COOKIE]
        assert client.post("/logout", data={"csrf": session_csrf}).status_code == 303
    replayed = httpx.post(
        f"{url}/releases/3/approve", data={"csrf": session_csrf, "note": ""}, cookies={COOKIE: cookie}
    )
    assert replayed.status_code == 403  # the session ended with the logout, though its cookie is unexpired
    assert Ledger(store).refresh().events == before


def test_guessing_tokens_is_throttled(dashboard: tuple[str, LocalStore]) -> None:
    url, _ = dashboard
    with httpx.Client(base_url=url) as client:

        def login(name: str, token: str) -> str:
            csrf = client.get("/login").text.split('name="csrf" value="')[1].split('"')[0]
            return client.post("/login", data={"csrf": csrf, "name": name, "token": token}).headers["location"]

        guesses = [login("eve", f"guess-{i}") for i in range(6)]  # this address failed before, in other tests
        assert set(guesses[:3]) <= {"/login?flash=bad-login", "/login?flash=throttled"}
        assert guesses[-1] == "/login?flash=throttled"
        assert login("ana", TOKEN) == "/login?flash=throttled"  # even the right token, from here, for a while


class CountingStore(LocalStore):
    """A local store that counts reads of ledger events."""

    event_reads = 0

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        if key.startswith("ledger/events/"):
            self.event_reads += 1
        return super().get(key, limit)


def test_pages_read_only_new_events_and_errors_are_html_pages_with_their_status(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    store = CountingStore(tmp_path / "store")
    keys = Keys(tmp_path / "keys")
    protect(store, keys)
    publish(gated(tmp_path / "m", tiny_model_dir), "main", store)
    settings = Settings(
        home=tmp_path / "home", dashboard={"open_read": True}, trust={"owners": [keys.fingerprint("owner")]}
    )
    with TestClient(create_app(settings, store)) as client:
        assert client.get("/").status_code == 200
        first, store.event_reads = store.event_reads, 0
        assert client.get("/").status_code == 200 and client.get("/stream").status_code == 200
        assert first >= 3 and store.event_reads == 2  # each page: one read that finds no new event
        missing = client.get("/releases/9")
        assert missing.status_code == 404 and "<h1>Not found</h1>" in missing.text and "no release" in missing.text
        refused = client.post("/releases/1/approve", data={"csrf": "x"})
        assert refused.status_code == 403 and "<h1>Refused</h1>" in refused.text


def test_the_release_list_says_who_signed_the_verdict_and_when_the_policy_keeps_a_release_off(tmp_path: Path) -> None:
    from shipyard.app.dashboard.views import releases
    from shipyard.registry.approval_policy import ChannelRule
    from shipyard.registry.releases import Registry

    from .helpers import candidate

    store, keys = LocalStore(tmp_path / "store"), Keys(tmp_path / "keys")
    publish(candidate(tmp_path / "c1", b"one"), "main", store)
    publish(candidate(tmp_path / "c2", b"two", signed=False), "main", store, ungated="a tokenizer hotfix")
    protect(store, keys, channels={"stable": ChannelRule(), "beta": ChannelRule(allow_ungated=True)})
    state = Registry.of(store, Settings(trust={"owners": [keys.fingerprint("owner")]})).state()
    stable = {r["version"]: r for r in releases(store, state, "main", "stable")}
    assert stable[1]["gate"] == "pass" and stable[1]["gate_why"].startswith("signed by the pipeline's key SHA256:")
    assert stable[1]["waiting"] == "0 of the 1 approval(s) stable needs"
    assert stable[2]["gate"] == "ungated" and "a tokenizer hotfix" in stable[2]["gate_why"]
    assert stable[2]["waiting"] == "never: ungated, and the policy keeps ungated releases off stable"
    beta = {r["version"]: r for r in releases(store, state, "main", "beta")}
    assert beta[2]["waiting"] == "0 of the 1 approval(s) beta needs"
