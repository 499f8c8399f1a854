"""One small real study shared by the report tests: a user trainer (some trials break a
step-time budget) and a tiny built-in workload (diabetes, SVM), 2 repeats each."""

from __future__ import annotations

from pathlib import Path

import pytest

import trainers
from frugalml import Search, Study, Workload, tune

STEP_BUDGET_MS = 100


def small_study(directory: Path, name: str = "report-small") -> Study:
    return Study(
        name=name,
        workloads=[
            Workload(train=trainers.steady, train_kwargs={"steps": 60}, eval_every=10, max_steps=60, name="steady",
                     params={"learning_rate": 0.01}),
            Workload(dataset="diabetes", algorithm="svm", max_steps=40, epochs=20, eval_every=10,
                     params={"learning_rate": 0.01}),
        ],
        search=Search(space={"batch_size": [30, 300], "step_s": [0.0005, 0.3]}),
        budget={"max_mean_step_ms": STEP_BUDGET_MS}, repeats=2, workers=2, directory=str(directory),
        mlflow_uri=None,
    )


@pytest.fixture(scope="session")
def report_study(tmp_path_factory: pytest.TempPathFactory, _environment: None) -> Path:
    directory = tmp_path_factory.mktemp("report") / "study"
    tune(small_study(directory))
    return directory
