"""Helpers shared by tests: writing study files and running the CLI as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def write_study(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``frugalml ARGS`` in a subprocess with the tests' trainers importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "frugalml.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )


def mlflow_trial_runs(uri: str, study: str) -> dict:
    """trial_id -> MLflow Run of a study's trial runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id], max_results=10000)
    return {r.data.tags["frugalml.trial_id"]: r for r in runs if "frugalml.trial_id" in r.data.tags}
