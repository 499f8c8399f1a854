"""Shared test set-up: real data from ../shared/data, a private cache, no network."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from helpers import FakeNvml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _environment(tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = tmp_path_factory.mktemp("frugalml-cache")
    os.environ["FRUGALML_CACHE_DIR"] = str(cache)
    os.environ["FRUGALML_DATA_DIR"] = str(SHARED_DATA)
    os.environ["FRUGALML_OFFLINE"] = "1"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    return tmp_path / "study"


@pytest.fixture
def fake_nvml(monkeypatch):
    def install(devices: list[dict], init_error: bool = False) -> FakeNvml:
        nvml = FakeNvml(devices, init_error)
        monkeypatch.setitem(sys.modules, "pynvml", nvml)
        return nvml

    return install
