"""Instrumentation overhead: the same SGD training loop with and without frugalml.

Both variants run in a fresh worker process pinned to the same core, on the same
memory-mapped mnist-shaped data, alternating A/B for several rounds. "bare" times
the loop with two clock reads around it; "frugalml" runs it as a real trial
through the LocalExecutor (Trial.step every step, a report every 100 steps, the
parent's watchdog sampling the worker at 10 Hz). Prints per-step times and the
ratio; the target is < 2 % added step time for steps of 1 ms or longer.

Whole-loop A/B ratios on a shared 2-core VM move by +-20 % between rounds, more
than the effect sought, so the script also measures the instrumentation itself:
``Trial.step`` called in a loop inside a real trial (same executor, same
watchdog), as microseconds per call and as a share of each batch size's bare step.

    python benchmarks/instrumentation_overhead.py [--steps 1500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_data(directory: Path, rows: int = 49000, features: int = 784) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((rows, features))
    y = rng.integers(0, 10, rows)
    np.save(directory / "X.npy", X)
    np.save(directory / "y.npy", y)
    return directory / "X.npy", directory / "y.npy"


def training_loop(trial, X_path: str, y_path: str, batch_size: int, steps: int) -> float:
    """The loop under test; ``trial`` None means no instrumentation at all. Returns seconds."""
    from sklearn.linear_model import SGDClassifier

    X, y = np.load(X_path, mmap_mode="r"), np.load(y_path, mmap_mode="r")
    model = SGDClassifier(loss="hinge", learning_rate="constant", eta0=0.01)
    classes = np.arange(10)
    model.partial_fit(X[:batch_size], y[:batch_size], classes=classes)  # warm-up outside the timing
    n = len(X)
    start = time.perf_counter()
    for step in range(steps):
        i = (step * batch_size) % (n - batch_size)
        Xb, yb = X[i : i + batch_size], y[i : i + batch_size]
        model.partial_fit(Xb, yb)
        if trial is not None and trial.step(loss=0.0, n_samples=batch_size):
            trial.report(val_loss=0.0)
    return time.perf_counter() - start


def frugal_train(trial, **kwargs) -> None:
    elapsed = training_loop(trial, **kwargs)
    trial.report(loop_s=elapsed)


def _bare_worker(queue, kwargs) -> None:
    import os

    os.sched_setaffinity(0, {0})
    queue.put(training_loop(None, **kwargs))


def run_bare(kwargs) -> float:
    context = multiprocessing.get_context("forkserver")
    queue = context.Queue()
    process = context.Process(target=_bare_worker, args=(queue, kwargs))
    process.start()
    elapsed = queue.get()
    process.join()
    return elapsed


def run_frugal(kwargs) -> float:
    from _watched import run_watched

    return run_watched(frugal_train, kwargs).last("loop_s")


def step_cost_train(trial, calls: int) -> None:
    """Only the instrumentation: ``calls`` steps with a report every window."""
    start = time.perf_counter()
    for _ in range(calls):
        if trial.step(loss=0.0, n_samples=30):
            trial.report(val_loss=0.0)
    trial.report(us_per_step=(time.perf_counter() - start) / calls * 1e6)


def run_step_cost(calls: int) -> float:
    from frugalml.executors import LocalExecutor, TrialTask

    executor = LocalExecutor(1, sample_interval_s=0.1, pin=True)
    executor.submit(TrialTask("cost/c/r0", 0, "cost", "c", 0, {}, step_cost_train, {"calls": calls}, eval_every=100))
    records = []
    while not records:
        records = executor.poll(1.0)
    return records[0].last("us_per_step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[30, 300])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        X_path, y_path = make_data(Path(tmp))
        print(f"{'batch':>6} {'bare ms/step':>13} {'frugalml ms/step':>17} {'ratio':>7}  (median of {args.rounds} A/B rounds)")
        bare_ms: dict[int, float] = {}
        for batch_size in args.batch_sizes:
            kwargs = dict(X_path=str(X_path), y_path=str(y_path), batch_size=batch_size, steps=args.steps)
            bare, frugal = [], []
            for _ in range(args.rounds):
                bare.append(run_bare(kwargs) / args.steps * 1000)
                frugal.append(run_frugal(kwargs) / args.steps * 1000)
            ratios = [f / b for b, f in zip(bare, frugal)]
            bare_ms[batch_size] = statistics.median(bare)
            print(
                f"{batch_size:>6} {statistics.median(bare):>13.3f} {statistics.median(frugal):>17.3f} "
                f"{statistics.median(ratios):>7.3f}   rounds: {' '.join(f'{r:.3f}' for r in ratios)}"
            )
        us = statistics.median(run_step_cost(200_000) for _ in range(3))
        print(f"Trial.step inside a watched trial: {us:.2f} us per call (median of 3 x 200000 calls)")
        for batch_size, ms in bare_ms.items():
            print(f"  = {us / (ms * 1000) * 100:.3f} % of a batch-{batch_size} step ({ms:.3f} ms bare)")


if __name__ == "__main__":
    main()
