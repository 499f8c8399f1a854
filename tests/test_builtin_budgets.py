"""Budgets on the thesis workloads, with real data from ../shared/data.

Data path: mnist_784 as a pandas DataFrame sliced per batch (as ``fetch_openml``
returns it), where each batch is copied: batch 30000 adds ~180 MB to a ~120 MB
worker. On memory-mapped numpy arrays it would add ~1 MB (nothing is copied).
"""

from __future__ import annotations

from frugalml import Search, Study, TrialStatus, Workload, tune


def test_memory_budget_stops_batch_30000_on_mnist_and_not_batch_300(study_dir):
    study = Study(
        name="mnist-memory",
        workloads=[Workload(dataset="mnist_784", algorithm="svm", data_format="pandas", max_steps=20, eval_every=5)],
        search=Search(space={"batch_size": [300, 30000], "learning_rate": [0.01]}),
        budget={"max_memory_mb": 230}, workers=2, directory=str(study_dir), mlflow_uri=None,
    )
    records = {r.params["batch_size"]: r for r in tune(study).records}
    small, large = records[300], records[30000]
    assert small.status is TrialStatus.COMPLETED and small.peak("memory_mb") < 230
    assert large.status is TrialStatus.STOPPED and large.stop.rule == "max_memory_mb"
    assert large.stop.value > 230 and large.steps_done < large.steps_planned
    assert large.stop.latency_ms < 1000


def test_step_time_budget_stops_batch_30000_on_mnist_and_not_batch_30(study_dir):
    # Quiet-machine step times: batch 30 ~2.5 ms (11 ms while warming up), 3000 ~65 ms, 30000 ~370 ms.
    # 3000 against 50 ms is too close to call on a shared machine; 30000 is stopped inside its first step.
    study = Study(
        name="mnist-steptime",
        workloads=[Workload(dataset="mnist_784", algorithm="perceptron", max_steps=30, eval_every=10)],
        search=Search(space={"batch_size": [30, 30000], "learning_rate": [0.01]}),
        budget={"max_mean_step_ms": 50}, workers=1, directory=str(study_dir), mlflow_uri=None,
    )
    records = {r.params["batch_size"]: r for r in tune(study).records}
    assert records[30].status is TrialStatus.COMPLETED, records[30].stop
    assert records[30].mean("mean_step_ms") < 50
    large = records[30000]
    assert large.status is TrialStatus.STOPPED and large.stop.rule == "max_mean_step_ms"
    assert large.stop.value > 50 and large.steps_done < large.steps_planned


def test_small_grid_on_diabetes_and_red_wine_with_repeats(study_dir):
    study = Study(
        name="thesis-small",
        workloads=[
            Workload(dataset="diabetes", algorithm="logistic_regression", epochs=2, eval_every=10),
            Workload(dataset="red_wine", algorithm="svm", eval_every=10),
        ],
        search=Search(space={"batch_size": [30, 3000], "learning_rate": [0.01, 0.001]}),
        repeats=2, workers=2, directory=str(study_dir),
    )
    result = tune(study)
    assert len(result.records) == 16
    clamped = [r for r in result.records if r.params["batch_size"] == 3000]
    assert all(r.info.get("batch_size_clamped") for r in clamped)
    diabetes = result.best_feasible("diabetes-logistic_regression")
    assert diabetes.mean["accuracy"] > 0.65 and diabetes.repeats == 2
    wine = result.best_feasible("red_wine-svm")
    assert 0.5 < wine.mean["rmse"] < 2.0
    assert all(r.status is TrialStatus.COMPLETED for r in result.records)
