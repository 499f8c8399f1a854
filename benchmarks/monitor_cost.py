"""Cost per call of sampling a worker's process tree, measured side by side.

Starts a worker that has loaded numpy and scikit-learn (fitted a model, holds arrays)
and ``--children`` data-loader-like subprocesses, then times, interleaved in rounds so
machine noise hits all alike:

* ``psutil memory_info() (root)``: the raw floor, one process, no tree.
* ``psutil children(recursive) + memory_info()``: the naive tree walk.
* ``ProcessTreeMonitor.sample()``: what the watchdog calls every 0.1 s.
* ``ProcessTreeMonitor.sample_detailed()``: adds USS and peak RSS, called every ~2 s.

Run: ``python benchmarks/monitor_cost.py [--calls 1000] [--children 2]``
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Callable

import psutil

from frugalml.monitors import ProcessTreeMonitor

WORKER = """
import subprocess, sys
import numpy as np
from sklearn.linear_model import SGDClassifier
rng = np.random.default_rng(0)
X = rng.random((50_000, 50))
y = (X[:, 0] > 0.5).astype(int)
SGDClassifier(max_iter=5, tol=None).fit(X, y)
loader = "import sys, numpy; sys.stdin.readline()"
children = [subprocess.Popen([sys.executable, "-c", loader], stdin=subprocess.PIPE)
            for _ in range(int(sys.argv[1]))]
print("ready", flush=True)
sys.stdin.readline()
"""


def _naive_tree_memory(pid: int) -> int:
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


def _time_calls(fn: Callable[[], object], calls: int) -> list[float]:
    durations = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        durations.append(time.perf_counter() - start)
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per method (default 1000)")
    parser.add_argument("--children", type=int, default=2, help="worker subprocesses (default 2)")
    args = parser.parse_args()

    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(args.children)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        if worker.stdout.readline().strip() != "ready":
            raise SystemExit(f"worker failed to start (exit code {worker.poll()})")
        root = psutil.Process(worker.pid)
        monitor = ProcessTreeMonitor(worker.pid)
        methods: dict[str, Callable[[], object]] = {
            "psutil memory_info() (root)": root.memory_info,
            "psutil children(recursive) + memory_info()": lambda: _naive_tree_memory(worker.pid),
            "ProcessTreeMonitor.sample()": monitor.sample,
            "ProcessTreeMonitor.sample_detailed()": monitor.sample_detailed,
        }
        durations: dict[str, list[float]] = {name: [] for name in methods}
        rounds = 10
        for _ in range(rounds):
            for name, fn in methods.items():
                durations[name] += _time_calls(fn, max(1, args.calls // rounds))
        sample = monitor.sample_detailed()
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    print(
        f"worker tree: {int(sample['n_processes'])} processes, "
        f"memory_mb={sample['memory_mb']:.1f}, rss_mb={sample['rss_mb']:.1f}, "
        f"uss_mb={sample['uss_mb']:.1f}; host: {psutil.cpu_count()} CPUs, "
        f"{len(psutil.pids())} processes; {args.calls} calls each"
    )
    floor = statistics.median(durations["psutil memory_info() (root)"])
    print(f"\n{'call':<44}{'median µs':>10}{'p90 µs':>10}{'x floor':>9}")
    for name, values in durations.items():
        median = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"{name:<44}{median * 1e6:>10.1f}{p90 * 1e6:>10.1f}{median / floor:>9.1f}")


if __name__ == "__main__":
    main()
