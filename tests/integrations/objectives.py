"""Plain Optuna objectives for the tests; module-level so worker processes can import them."""

from __future__ import annotations

import sys
import time

import numpy as np
import optuna

from frugalml.integrations.optuna import SystemBudgetPruner, instrument


@instrument
def allocating_objective(trial):
    """A plain objective (trial.report / trial.should_prune) that allocates after epoch 2."""
    megabytes = trial.suggest_int("megabytes", 10, 1000)
    held, loss = [], 1.0
    for epoch in range(8):
        if epoch == 2:
            held.append(np.ones(megabytes * 2**20 // 8))
        time.sleep(0.05)
        loss = 1.0 / (epoch + 1)
        trial.report(loss, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return loss


def run_worker(storage: str, study_name: str, n_trials: int) -> None:
    """One of several processes sharing a study through RDB storage."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=SystemBudgetPruner(max_memory_mb=400))
    study.optimize(allocating_objective, n_trials=n_trials)


if __name__ == "__main__":
    run_worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))
