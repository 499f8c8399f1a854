"""Optuna overhead: the canonical SGDClassifier pruning example, plain vs ``@instrument``.

Optuna's pruning example (``SGDClassifier`` on iris, ``partial_fit`` + ``score`` +
``trial.report`` + ``trial.should_prune`` per step) on SQLite storage, run as written
("plain", ``MedianPruner``) and decorated with ``frugalml.integrations.optuna.instrument``
(pruner ``SystemBudgetPruner(wrapped=MedianPruner())``). All arms run in this process,
one trial of each in turn (the order rotates), each study in its own SQLite file.
A third arm, ``flush_every=1``, stores the metrics at every report, as ``@instrument``
did before metrics were kept in memory between stores.

Per-step time is the objective's loop time (wall clock around the 100 steps, so it
includes the storage writes of ``report`` and whatever the instrumentation adds) over
the steps run; the instrumented arm's start-up (a sidecar per trial, ``gc.collect``)
is outside the loop and printed apart as per-trial cost. Target: instrumented per-step
time within 5 % of plain.

    python benchmarks/optuna_overhead.py [--rounds 5] [--trials 8] [--csv ../shared/data/diabetes.csv.gz]
                                         [--db-dir /dev/shm]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

from frugalml.integrations.optuna import SystemBudgetPruner, instrument

STEPS = 100


def load(csv: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Iris (as Optuna's example), or a CSV whose last column is the target."""
    if csv is None:
        from sklearn.datasets import load_iris

        data = load_iris()
        return data.data, data.target
    import pandas as pd

    frame = pd.read_csv(csv)
    return frame.iloc[:, :-1].to_numpy(float), frame.iloc[:, -1].astype("category").cat.codes.to_numpy()


def make_objective(X: np.ndarray, y: np.ndarray, loops: list[tuple[float, int]]):
    """Optuna's pruning example; each trial appends (loop seconds, steps run) to ``loops``."""
    from sklearn.linear_model import SGDClassifier
    from sklearn.model_selection import train_test_split

    train_x, valid_x, train_y, valid_y = train_test_split(X, y, test_size=0.25, random_state=0)
    classes = np.unique(y)

    def objective(trial):
        alpha = trial.suggest_float("alpha", 1e-5, 1e-1, log=True)
        clf = SGDClassifier(alpha=alpha, random_state=0)
        start, step = time.perf_counter(), 0
        try:
            for step in range(STEPS):
                clf.partial_fit(train_x, train_y, classes=classes)
                trial.report(1.0 - clf.score(valid_x, valid_y), step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        finally:
            loops.append((time.perf_counter() - start, step + 1))
        return 1.0 - clf.score(valid_x, valid_y)

    return objective


def make_arm(arm: str, X: np.ndarray, y: np.ndarray, directory: Path, seed: int):
    """A study and its objective; the objective's loop times go to the returned list."""
    loops: list[tuple[float, int]] = []
    objective = make_objective(X, y, loops)
    pruner: optuna.pruners.BasePruner = optuna.pruners.MedianPruner()
    if arm != "plain":
        objective = instrument(objective, flush_every=1 if arm == "flush_every=1" else 10)
        pruner = SystemBudgetPruner(max_memory_mb=100_000, wrapped=pruner)
    study = optuna.create_study(storage=f"sqlite:///{directory / f'{arm}-{seed}.db'}", pruner=pruner,
                                sampler=optuna.samplers.TPESampler(seed=seed))
    return study, objective, loops


def summary(study: optuna.Study, loops: list[tuple[float, int]]) -> dict[str, float]:
    loop_s, steps = sum(s for s, _ in loops), sum(n for _, n in loops)
    trial_s = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials)
    return {"step_ms": 1000 * loop_s / steps, "setup_ms": 1000 * (trial_s - loop_s) / len(study.trials),
            "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--csv", help="a CSV with the target last (default: iris, as Optuna's example)")
    parser.add_argument("--db-dir", help="where the SQLite files go (default: a temporary directory)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    X, y = load(args.csv)
    arms = ["plain", "instrument", "flush_every=1"]
    results: dict[str, list[dict[str, float]]] = {arm: [] for arm in arms}
    print(f"{len(X)} rows, {args.trials} trials x {STEPS} steps per study, SQLite storage")
    print(f"{'round':5} {'arm':14} {'step ms':>8} {'per-trial setup ms':>19} {'steps':>6}")
    with tempfile.TemporaryDirectory(dir=args.db_dir) as tmp:
        for round_ in range(args.rounds):
            # one trial of each arm in turn (the order rotates): a slow spell of the
            # machine or the disk falls on all arms alike
            runs = {arm: make_arm(arm, X, y, Path(tmp), seed=round_) for arm in arms}
            for number in range(args.trials):
                shift = (round_ + number) % len(arms)
                for arm in arms[shift:] + arms[:shift]:
                    study, objective, _ = runs[arm]
                    study.optimize(objective, n_trials=1)
            for arm in arms:
                result = summary(runs[arm][0], runs[arm][2])
                results[arm].append(result)
                print(f"{round_ + 1:<5} {arm:14} {result['step_ms']:8.2f} {result['setup_ms']:19.1f} {result['steps']:6.0f}")
    median = {arm: statistics.median(r["step_ms"] for r in rs) for arm, rs in results.items()}
    for arm in arms[1:]:
        ratios = [a["step_ms"] / p["step_ms"] for a, p in zip(results[arm], results["plain"])]
        print(f"{arm} / plain per-step time: median of rounds {statistics.median(ratios):.3f} "
              f"(range {min(ratios):.3f}-{max(ratios):.3f}); medians {median[arm]:.2f} / {median['plain']:.2f} ms")
    setup = statistics.median(r["setup_ms"] for r in results["instrument"])
    print(f"instrument per-trial start-up outside the loop (sidecar, gc): median {setup:.0f} ms")


if __name__ == "__main__":
    main()
