"""Ray Tune users: an unmodified function trainable, stopped by a frugalml memory budget."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="needs the 'ray' extra: pip install 'frugalml[ray]'")
from ray import tune  # noqa: E402

from frugalml import ConfigError  # noqa: E402
from frugalml.integrations.ray_tune import (  # noqa: E402
    SystemBudgetStopper, best_feasible_result, with_system_metrics,
)


def allocating_trainable(config):
    """A plain Ray Tune function trainable: it knows nothing of frugalml. The bigger
    its allocation, the lower its loss (a bigger model): the over-budget trial has the
    best loss when it is stopped."""
    held = []
    for iteration in range(20):
        if iteration == 5:
            held.append(np.ones(config["megabytes"] * 2**20 // 8))  # touches every page
        time.sleep(0.02)
        tune.report({"loss": 1.0 / (iteration + 1) / config["megabytes"]})


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray whose workers can import this module (they inherit this environment)."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), saved or ""])
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield
    finally:
        ray.shutdown()
        os.environ.pop("PYTHONPATH") if saved is None else os.environ.__setitem__("PYTHONPATH", saved)


def test_an_unmodified_trainable_is_stopped_by_a_memory_budget(local_ray, tmp_path):
    stopper = SystemBudgetStopper(max_memory_mb=500)
    trainable = with_system_metrics(allocating_trainable)
    tuner = tune.Tuner(
        trainable,
        param_space={"megabytes": tune.grid_search([20, 600])},
        run_config=tune.RunConfig(name="budget", stop=stopper, storage_path=str(tmp_path), verbose=0),
    )
    grid = tuner.fit()
    results = {r.config["megabytes"]: r for r in grid}
    small, large = results[20].metrics, results[600].metrics
    assert small["training_iteration"] == 20 and small["memory_mb"] < 500  # ran in full
    for name in ("memory_mb", "rss_mb", "cpu_percent", "cpu_s", "mean_step_ms", "wall_s"):
        assert name in small, name
    assert 15 < small["mean_step_ms"] < 500  # ~20 ms per reported iteration
    assert large["training_iteration"] < 20 and large["memory_mb"] > 500  # stopped after the allocation
    (trial_id, stop), = stopper.stops.items()
    assert trial_id == results[600].metrics["trial_id"]
    assert stop.rule == "max_memory_mb" and stop.kind == "system" and stop.value > 500

    # Both trials end TERMINATED, and Tune's own pick is the over-budget trial (its loss is lower) ...
    assert grid.get_best_result(metric="loss", mode="min").config["megabytes"] == 600
    # ... the documented call is not fooled.
    assert best_feasible_result(grid, metric="loss", mode="min").config["megabytes"] == 20

    # The verdict is saved with the experiment: read back from disk, without the stopper.
    del stopper, tuner, grid
    restored = {r.config["megabytes"]: r for r in
                tune.Tuner.restore(str(tmp_path / "budget"), trainable=trainable).get_results()}
    large = restored[600].metrics
    assert large["feasible"] is False and restored[20].metrics["feasible"] is True
    assert large["frugalml_stop"]["rule"] == "max_memory_mb" and large["frugalml_stop"]["value"] > 500
    assert "frugalml_stop" not in restored[20].metrics
    assert best_feasible_result(restored.values(), metric="loss", mode="min").config["megabytes"] == 20
    logged = json.loads((Path(restored[600].path) / "result.json").read_text().splitlines()[-1])
    assert logged["frugalml_stop"]["rule"] == "max_memory_mb" and logged["feasible"] is False


def test_the_stopper_reads_plain_results_and_tune_timings_and_marks_them():
    stopper = SystemBudgetStopper({"max_mean_step_ms": 50}, max_study_cpu_seconds=10)
    fine, slow, spent = ({"time_this_iter_s": 0.01, "training_iteration": 1, "cpu_s": 4},
                         {"time_this_iter_s": 0.2, "training_iteration": 1},
                         {"mean_step_ms": 1, "training_iteration": 2, "cpu_s": 11})
    assert not stopper("a", fine)
    assert fine["feasible"] is True and "frugalml_stop" not in fine
    assert stopper("b", slow)  # no mean_step_ms: Tune's own
    assert stopper.stops["b"].rule == "max_mean_step_ms" and not stopper.stop_all()
    assert slow["feasible"] is False and slow["frugalml_stop"]["rule"] == "max_mean_step_ms"
    assert stopper("a", spent)
    assert stopper.stops["a"].rule == "max_study_cpu_seconds" and stopper.stop_all()
    assert spent["feasible"] is True and spent["frugalml_stop"]["kind"] == "study"  # the study's budget, not the trial's


def test_best_feasible_result_leaves_out_over_budget_failed_and_nan_trials():
    def result(loss, **metrics):
        return ray.tune.Result(metrics={"loss": loss, **metrics}, checkpoint=None, error=None, path="")

    over, nan, fine, worse = result(0.1, feasible=False), result(float("nan")), result(0.5, feasible=True), result(0.7)
    failed = ray.tune.Result(metrics={"loss": 0.0}, checkpoint=None, error=RuntimeError("boom"), path="")
    assert best_feasible_result([over, nan, failed, worse, fine], metric="loss", mode="min") is fine
    assert best_feasible_result([over, fine, worse], metric="loss", mode="max") is worse
    with pytest.raises(RuntimeError, match="No feasible trial reported 'loss'"):
        best_feasible_result([over, failed], metric="loss", mode="min")
    with pytest.raises(ConfigError, match="mode must be 'min' or 'max'"):
        best_feasible_result([fine], metric="loss", mode="minimize")


@pytest.mark.parametrize(
    "kwargs, message",
    [({}, "needs at least one budget"), ({"max_memory_mb": 0}, "range (0, inf)"), ({"max_rss": 1}, "Unknown budget")],
)
def test_bad_budgets_are_one_line_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SystemBudgetStopper(**kwargs)
