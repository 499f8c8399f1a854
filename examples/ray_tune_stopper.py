"""A Ray Tune trainable, unmodified, stopped by a frugalml memory budget (README: Ray Tune)."""

import time

import numpy as np
from ray import tune

from frugalml.integrations.ray_tune import SystemBudgetStopper, best_feasible_result, with_system_metrics


def train(config):                          # an unmodified function trainable
    held = []
    for step in range(20):
        if step == 5:
            held.append(np.ones(config["megabytes"] * 2**20 // 8))
        time.sleep(0.02)
        tune.report({"loss": 1.0 / (step + 1)})


stopper = SystemBudgetStopper(max_memory_mb=500)
tuner = tune.Tuner(
    with_system_metrics(train),
    param_space={"megabytes": tune.grid_search([20, 600])},
    run_config=tune.RunConfig(stop=stopper),
)
results = tuner.fit()
print(best_feasible_result(results, metric="loss", mode="min").config)  # over-budget trials left out
print(stopper.stops)                        # trial_id -> StopInfo(rule='max_memory_mb', value=..., ...)
