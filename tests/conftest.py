"""Shared test set-up: real data from ../shared/data, a private cache, no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
