"""Fixtures for the workload tests: a private cache, offline mode, prepared real datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from frugalml.messages import Message
from frugalml.trial import Trial
from frugalml.workloads import PreparedData, prepare_dataset, resolve_dataset, sgd_train

# /work/main/tests/workloads/conftest.py -> /work/shared/data
DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"

if not (DATA_DIR / "diabetes.csv.gz").is_file():
    pytest.skip(f"benchmark data not found in {DATA_DIR}", allow_module_level=True)


@pytest.fixture(scope="package", autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory):
    """A fresh cache for these tests, and never OpenML: tests must not go online."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FRUGALML_CACHE_DIR", str(tmp_path_factory.mktemp("frugalml-cache")))
        patch.setenv("FRUGALML_OFFLINE", "1")
        patch.delenv("FRUGALML_DATA_DIR", raising=False)
        yield


@pytest.fixture(scope="package")
def diabetes(isolated_env: None) -> PreparedData:
    return prepare_dataset(resolve_dataset("diabetes"))


@pytest.fixture(scope="package")
def red_wine(isolated_env: None) -> PreparedData:
    return prepare_dataset(resolve_dataset("red_wine"))


@pytest.fixture(scope="package")
def mnist(isolated_env: None) -> PreparedData:
    return prepare_dataset(resolve_dataset("mnist_784"))


@pytest.fixture
def train() -> Callable[..., tuple[Trial, list[Message]]]:
    """Run ``sgd_train`` through a real Trial; returns it and the messages it sent."""

    def run(
        data: PreparedData,
        algorithm: str,
        *,
        batch_size: Any = 32,
        learning_rate: Any = 0.01,
        eval_every: int = 10,
        **kwargs: Any,
    ) -> tuple[Trial, list[Message]]:
        messages: list[Message] = []
        params = {"batch_size": batch_size, "learning_rate": learning_rate}
        if "alpha" in kwargs:
            params["alpha"] = kwargs.pop("alpha")
        trial = Trial(params, eval_every=eval_every, send=messages.append)
        sgd_train(trial, data, algorithm=algorithm, **kwargs)
        return trial, messages

    return run
