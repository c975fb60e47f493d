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

from shipyard.approvals import approve
from shipyard.dashboard.app import create_app
from shipyard.dashboard.auth import COOKIE, hash_token
from shipyard.ledger import Ledger
from shipyard.publish import publish
from shipyard.settings import Settings
from shipyard.stores import LocalStore

pytestmark = pytest.mark.browser
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[1] / "test-artifacts"
TOKEN = "ana-secret-token"


def release_of(tiny_model_dir: Path, out: Path, step: int, accuracy: float) -> Path:
    shutil.copytree(tiny_model_dir, out)
    (out / "config.json").write_text((tiny_model_dir / "config.json").read_text() + " " * step)
    checks = [{"name": "floor: arith", "passed": True, "detail": f"{accuracy} ≥ 0.3"}]
    (out / "gate.json").write_text(json.dumps({"passed": True, "checks": checks, "flips": []}))
    evals = {"arith": {"exact_match": accuracy}, "refusal_harmful": {"refusal": 0.9}}
    (out / "evals.json").write_text(json.dumps(evals))
    lineage = {"run": "runs/demo", "step": step, "checkpoint_digest": f"c{step}", "metrics": {"reward": step / 200}}
    (out / "lineage.json").write_text(json.dumps(lineage))
    return out


@pytest.fixture(scope="module")
def dashboard(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, LocalStore]]:
    """A dashboard on 127.0.0.1 over a store with v1 (stable, approved by bo), v2 and v3 pending."""
    tmp = tmp_path_factory.mktemp("dashboard")
    store = LocalStore(tmp / "store")
    for step, accuracy in ((40, 0.5), (80, 0.6), (100, 0.7)):
        publish(release_of(tiny_model_dir, tmp / f"m{step}", step, accuracy), "main", store)
    settings = Settings(
        home=tmp / "home",
        approval={"approvers": ["ana", "bo"]},
        dashboard={"tokens": {"ana": hash_token(TOKEN)}, "secret": "test-secret"},
    )
    approve(store, "main", 1, "bo", settings.approval, "first")
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
    assert page.locator("svg[aria-label^='eval scores']").count() == 1
    assert page.locator("svg[aria-label^='the RL run'] polyline").count() == 1  # train reward by step
    page.screenshot(path=str(ARTIFACTS / "dashboard-index.png"), full_page=True)
    page.goto(f"{url}/releases/2")
    assert "floor: arith" in page.inner_text("#evidence") and "+0.100" in page.inner_text("#evidence")
    assert "shipyard pull v2" in page.inner_text("body")
    page.screenshot(path=str(ARTIFACTS / "dashboard-release.png"), full_page=True)
    page.goto(f"{url}/stream")
    assert "released as v3" in page.inner_text("#stream")


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
    page.fill("#name", "ana")
    page.fill("#token", TOKEN)
    page.click("#sign-in")
    assert page.inner_text("#user") == "ana"
    page.fill("#pending tr:has-text('v2') input[name=note]", "gate is clean")
    page.click("#approve-v2")
    assert "v2 approved by ana" in page.inner_text("#flash")
    assert "v2" in page.inner_text("#channels tr:has-text('stable')")
    page.screenshot(path=str(ARTIFACTS / "dashboard-approved.png"), full_page=True)
    state = Ledger(store).refresh()
    assert state.channel("main", "stable") == 2
    assert [(a["by"], a["door"], a["note"]) for a in state.approvals[("main", 2)]] == [
        ("ana", "dashboard", "gate is clean")
    ]


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
    assert Ledger(store).refresh().events == before
