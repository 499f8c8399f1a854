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


def shared_storage(url: str) -> optuna.storages.RDBStorage:
    """SQLite storage that waits up to a minute for a lock held by another process (default: 5 s)."""
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})


def run_worker(url: str, study_name: str, megabytes: list[int]) -> None:
    """One of several processes sharing a study through RDB storage, one trial per value.

    Each value is fixed by this process's sampler, not enqueued in the shared study:
    two processes can both claim the same enqueued trial on SQLite (optuna#4002, #4621).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = shared_storage(url)
    for value in megabytes:
        study = optuna.load_study(study_name=study_name, storage=storage,
                                  sampler=optuna.samplers.PartialFixedSampler({"megabytes": value},
                                                                              optuna.samplers.RandomSampler()),
                                  pruner=SystemBudgetPruner(max_memory_mb=400))
        study.optimize(allocating_objective, n_trials=1)


if __name__ == "__main__":
    run_worker(sys.argv[1], sys.argv[2], [int(v) for v in sys.argv[3].split(",")])
