"""Shared fixtures. The whole session runs offline: nothing may reach a hub."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .hub_server import HubServer

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_XET"):
    os.environ[_name] = "1"
os.environ["DISABLE_MULTIPROC"] = "1"
# Prefect keeps its database and results in a home of the session's own, never the user's ~/.prefect.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="shipyard-tests-prefect-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"


@pytest.fixture(autouse=True)
def _clean_shipyard_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees SHIPYARD_* variables or a shipyard.yaml it did not make itself; the demo's profile is on
    (its recipe, gate policy and screening suite are the defaults), as `shipyard demo` writes it."""
    for name in list(os.environ):
        if name.startswith("SHIPYARD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SHIPYARD_PROFILE", "demo")
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shipyard.demo.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def rl_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of a short demo RL run: the tiny model after its warm start and 10 GRPO steps."""
    from shipyard.demo.rl_run import run_demo
    from shipyard.settings import DemoSettings

    out = tmp_path_factory.mktemp("rl-run")
    run_demo(DemoSettings(out=out, steps=10, save_every=10), progress=False)
    return out / "checkpoint-10"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on loopback; boto3 reaches it over real HTTP."""
    from moto.server import ThreadedMotoServer

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def hub_server() -> Iterator[HubServer]:
    """The Hub-compatible test server on loopback."""
    with HubServer() as server:
        yield server


@pytest.fixture
def hub_online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Let huggingface_hub make requests (to the loopback test server only) and cache under tmp_path."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """`item.failed_call`: whether the test itself failed (fixtures keep logs as artifacts then)."""
    report = yield
    if report.when == "call":
        item.failed_call = report.failed  # type: ignore[attr-defined]
    return report
