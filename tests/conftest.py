"""Shared fixtures. The whole session runs offline: nothing may reach a hub."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_name] = "1"
os.environ["DISABLE_MULTIPROC"] = "1"


@pytest.fixture(autouse=True)
def _clean_shipyard_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees SHIPYARD_* variables or a shipyard.yaml it did not make itself."""
    for name in list(os.environ):
        if name.startswith("SHIPYARD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shipyard.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny"))
