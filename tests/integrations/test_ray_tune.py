"""Ray Tune users: an unmodified function trainable, stopped by a frugalml memory budget."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="needs the 'ray' extra: pip install 'frugalml[ray]'")
from ray import tune  # noqa: E402

from frugalml import ConfigError  # noqa: E402
from frugalml.integrations.ray_tune import SystemBudgetStopper, with_system_metrics  # noqa: E402


def allocating_trainable(config):
    """A plain Ray Tune function trainable: it knows nothing of frugalml."""
    held = []
    for iteration in range(20):
        if iteration == 5:
            held.append(np.ones(config["megabytes"] * 2**20 // 8))  # touches every page
        time.sleep(0.02)
        tune.report({"loss": 1.0 / (iteration + 1)})


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
    tuner = tune.Tuner(
        with_system_metrics(allocating_trainable),
        param_space={"megabytes": tune.grid_search([20, 600])},
        run_config=tune.RunConfig(stop=stopper, storage_path=str(tmp_path), verbose=0),
    )
    results = {r.config["megabytes"]: r for r in tuner.fit()}
    small, large = results[20].metrics, results[600].metrics
    assert small["training_iteration"] == 20 and small["memory_mb"] < 500  # ran in full
    for name in ("memory_mb", "rss_mb", "cpu_percent", "cpu_s", "mean_step_ms", "wall_s"):
        assert name in small, name
    assert 15 < small["mean_step_ms"] < 500  # ~20 ms per reported iteration
    assert large["training_iteration"] < 20 and large["memory_mb"] > 500  # stopped after the allocation
    (trial_id, stop), = stopper.stops.items()
    assert trial_id == results[600].metrics["trial_id"]
    assert stop.rule == "max_memory_mb" and stop.kind == "system" and stop.value > 500


def test_the_stopper_reads_plain_results_and_tune_timings():
    stopper = SystemBudgetStopper({"max_mean_step_ms": 50}, max_study_cpu_seconds=10)
    assert not stopper("a", {"time_this_iter_s": 0.01, "training_iteration": 1, "cpu_s": 4})
    assert stopper("b", {"time_this_iter_s": 0.2, "training_iteration": 1})  # no mean_step_ms: Tune's own
    assert stopper.stops["b"].rule == "max_mean_step_ms" and not stopper.stop_all()
    assert stopper("a", {"mean_step_ms": 1, "training_iteration": 2, "cpu_s": 11})
    assert stopper.stops["a"].rule == "max_study_cpu_seconds" and stopper.stop_all()


@pytest.mark.parametrize(
    "kwargs, message",
    [({}, "needs at least one budget"), ({"max_memory_mb": 0}, "range (0, inf)"), ({"max_rss": 1}, "Unknown budget")],
)
def test_bad_budgets_are_one_line_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SystemBudgetStopper(**kwargs)
