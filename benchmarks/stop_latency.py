"""Watchdog stop latency: how fast a trial that breaks a memory budget is stopped.

Each trial allocates memory gradually inside ONE long training step (20 MB every
20 ms, ~1 GB/s, never reporting in between), against a 300 MB budget. For each
watchdog cadence it prints:

* latency: from the sample that first broke the budget to the worker's process
  tree being killed and reaped (StopInfo.latency_ms);
* overshoot: how far past the budget memory was at that sample (MB), which is
  bounded by the allocation rate times the sampling interval.

    python benchmarks/stop_latency.py [--trials 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

BUDGET_MB = 300


def allocate_gradually(trial) -> None:
    trial.step(loss=1.0)
    chunks = []
    for _ in range(100):  # up to 2000 MB in one step
        chunks.append(np.ones(20 * 2**20 // 8))
        time.sleep(0.02)
    trial.step(loss=1.0)


def run(interval: float, trials: int) -> tuple[list[float], list[float]]:
    from frugalml.executors import LocalExecutor, TrialTask
    from frugalml.stopping import MemoryBudget

    latencies, overshoots = [], []
    for number in range(trials):
        executor = LocalExecutor(1, rules=[MemoryBudget(BUDGET_MB)], sample_interval_s=interval)
        executor.submit(TrialTask(f"b/{number}/r0", number, "b", "c", 0, {}, allocate_gradually, steps_planned=2))
        records = []
        while not records:
            records = executor.poll(1.0)
        stop = records[0].stop
        assert stop is not None, records[0]
        latencies.append(stop.latency_ms)
        overshoots.append(stop.value - BUDGET_MB)
    return latencies, overshoots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    print(f"{'interval s':>10} {'latency ms p50':>15} {'p95':>7} {'overshoot MB p50':>17} {'max':>6}")
    for interval in (0.5, 0.1, 0.05):
        latencies, overshoots = run(interval, args.trials)
        p95 = statistics.quantiles(latencies, n=20)[-1] if len(latencies) > 1 else latencies[0]
        print(
            f"{interval:>10} {statistics.median(latencies):>15.1f} {p95:>7.1f} "
            f"{statistics.median(overshoots):>17.1f} {max(overshoots):>6.1f}"
        )


if __name__ == "__main__":
    main()
