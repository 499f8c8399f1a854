"""Real trials shared by the prediction tests: run once, read by many."""

from __future__ import annotations

import pytest

from frugalml import Search, Study, TrialRecord, Workload, tune


@pytest.fixture(scope="package")
def real_records(tmp_path_factory: pytest.TempPathFactory) -> list[TrialRecord]:
    """Two real diabetes trials (logistic regression, pandas batches), 8 windows each."""
    study = Study(
        name="real-windows",
        workloads=[Workload(dataset="diabetes", algorithm="logistic_regression", data_format="pandas",
                            epochs=100, max_steps=40, eval_every=5)],
        search=Search(space={"batch_size": [30, 300], "learning_rate": [0.01]}),
        workers=2, directory=str(tmp_path_factory.mktemp("real-windows")), mlflow_uri=None,
    )
    records = list(tune(study).records)
    assert all(len(r.windows) == 8 for r in records)
    return records
