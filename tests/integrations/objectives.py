"""Plain Optuna objectives for the tests; module-level so worker processes can import them."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import optuna

from frugalml.integrations.optuna import BudgetGatedSampler, SystemBudgetPruner, instrument
from frugalml.monitors import ProcessTreeMonitor


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


@instrument(sidecar=False)  # the read at each report is exact here: the allocation is held
def capacity_objective(trial):
    """A plain objective whose memory grows with a suggested size, and whose loss falls with
    it (a bigger model is better): the best configurations lie just under a memory budget."""
    megabytes = trial.suggest_int("megabytes", 10, 1000, log=True)
    held, loss = [], 1.0
    for epoch in range(6):
        if epoch == 1:
            held.append(np.ones(megabytes * 2**20 // 8))
        loss = 1.0 / (epoch + 1) + 100.0 / megabytes
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


def run_tpe(arm: str, seed: int) -> None:
    """A seeded 30-trial TPE study of :func:`capacity_objective` with ~300 MB of memory to
    spare, in a fresh process (what one arm allocated does not change the other's
    baseline); prints the budget, then one JSON line per trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tpe = optuna.samplers.TPESampler(seed=seed)
    sampler = BudgetGatedSampler(tpe, features=["megabytes"], seed=seed) if arm == "gated" else tpe
    limit = ProcessTreeMonitor(os.getpid()).sample()["memory_mb"] + 300  # after the gate's scipy: the same room
    study = optuna.create_study(sampler=sampler, pruner=SystemBudgetPruner(max_memory_mb=limit))
    study.optimize(capacity_objective, n_trials=30)
    print(json.dumps({"max_memory_mb": limit}))
    for t in study.trials:
        print(json.dumps({"number": t.number, "params": t.params, "state": t.state.name, "value": t.value,
                          "user_attrs": t.user_attrs, "constraints": t.constraints}))


if __name__ == "__main__":
    if sys.argv[1] == "tpe":
        run_tpe(sys.argv[2], int(sys.argv[3]))
    else:
        run_worker(sys.argv[1], sys.argv[2], [int(v) for v in sys.argv[3].split(",")])
