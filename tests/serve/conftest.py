"""Serving fixtures: a model fitted on real diabetes data and one real server process for the session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from serve_helpers import ADMIN_TOKEN, ServerProcess

HERE = Path(__file__).resolve().parent
CONFIG = """
window_rows = 150
min_window_rows = 50
interval_s = 0.1

[custom_metrics]
mean_glucose = "serve_helpers:mean_glucose"
"""


@pytest.fixture(scope="session")
def diabetes():
    """The diabetes split as the study prepares it, and in raw units as clients send it."""
    from frugalml.registry import raw_split
    from frugalml.workloads import prepare_dataset, resolve_dataset

    data = prepare_dataset(resolve_dataset("diabetes"), seed=0)
    return data, raw_split(data)


@pytest.fixture(scope="session")
def model_dir(diabetes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A servable model directory, built with the functions ``frugalml register`` uses."""
    from frugalml.registry import build_reference, fit_model
    from frugalml.serve import save_model

    data, split = diabetes
    model = fit_model(data, "logistic_regression", {"batch_size": 32, "learning_rate": 0.01})
    return save_model(model, build_reference(model, data, split), tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="session")
def model(model_dir: Path):
    import mlflow.sklearn

    return mlflow.sklearn.load_model(str(model_dir))


@pytest.fixture(scope="session")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("server")
    (folder / "monitoring.toml").write_text(CONFIG)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")])
    process = ServerProcess(str(model_dir), "--token", ADMIN_TOKEN, "--max-body-bytes", "65536", "--max-rows", "1000",
                            "--body-timeout", "2", "--config", str(folder / "monitoring.toml"), log=folder / "server.log")
    process.model_dir = model_dir
    try:
        try:  # what a client that waits for the line gets (test_the_serving_line_comes_once_the_socket_listens)
            process.health_when_announced = process.wait_line().client.get("/health").status_code
        except httpx.TransportError as error:
            process.health_when_announced = type(error).__name__
        yield process.wait_ready()
    finally:
        process.stop()
