"""A plain Optuna objective pruned by a frugalml memory budget (README: Optuna)."""

import time

import numpy as np
import optuna

from frugalml.integrations.optuna import SystemBudgetPruner, instrument


@instrument                                 # measures the objective's process
def objective(trial):                       # a plain Optuna objective
    megabytes = trial.suggest_int("megabytes", 10, 800)
    held = []
    for epoch in range(8):
        if epoch == 2:
            held.append(np.ones(megabytes * 2**20 // 8))
        time.sleep(0.05)
        trial.report(1.0 / (epoch + 1), epoch)   # also stores memory_mb, mean_step_ms, ...
        if trial.should_prune():
            raise optuna.TrialPruned()
    return 1.0 / 8


study = optuna.create_study(
    storage="sqlite:///optuna-study.db", study_name="frugal", load_if_exists=True,
    sampler=optuna.samplers.TPESampler(seed=6),
    pruner=SystemBudgetPruner(max_memory_mb=400, wrapped=optuna.pruners.MedianPruner()),
)
study.optimize(objective, n_trials=6)
for t in study.trials:
    print(t.number, t.params, t.state.name, t.user_attrs.get("frugalml_stop", {}).get("message"))
