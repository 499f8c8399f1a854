"""The same 16-trial study on the local backend and on Ray, with the same CPUs.

The thesis grid (batch size {30, 300, 3000, 30000} x learning rate {0.1, 0.01, 0.001,
0.0001}) of a built-in workload (mnist_784, linear SVM, ``--steps`` steps per trial),
run by ``frugalml.tune`` first with ``backend="local"`` and then with ``backend="ray"``
on a local Ray started with ``num_cpus=--workers``. MLflow is off for both: tracking
is the same code whichever backend ran the trials.

Rounds alternate local and Ray (``--rounds``, default 2) so that a change in machine
load hits both. Printed per run: the study's wall time; the first trial's latency,
from the driver submitting it to its training starting (the end of the trial seen by
the driver minus the wall time its training function measured: worker process and
forkserver start-up, and on Ray scheduling and Ray worker start-up); the median of
that latency over the other trials. Then the Ray/local wall-time ratio cold (round 1,
``ray.init`` included) and warm (later rounds, Ray already up: a new study on a running
cluster), and Ray's fixed start-up cost (``ray.init`` plus its first-trial latency).

    python benchmarks/ray_vs_local.py [--steps 200] [--workers 2] [--rounds 2] [--dataset mnist_784]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from frugalml import Search, Study, Workload, tune

GRID = {"batch_size": [30, 300, 3000, 30000], "learning_rate": [0.1, 0.01, 0.001, 0.0001]}


@dataclass
class Timing:
    backend: str
    wall_s: float
    first_latency_s: float
    median_latency_s: float
    statuses: dict[str, int]


def run(backend: str, args: argparse.Namespace) -> Timing:
    with tempfile.TemporaryDirectory(prefix=f"frugalml-bench-{backend}-") as directory:
        return _run(backend, args, directory)


def _run(backend: str, args: argparse.Namespace, directory: str) -> Timing:
    study = Study(
        name=f"ray-vs-local-{backend}", directory=directory,
        workloads=[Workload(dataset=args.dataset, algorithm=args.algorithm, max_steps=args.steps, eval_every=50)],
        search=Search(method="grid", space=GRID), workers=args.workers, backend=backend, mlflow_uri=None,
    )
    submitted: dict[str, float] = {}
    latencies: list[tuple[float, float]] = []  # (submitted at, seconds until its training started)

    def progress(event: str, payload: Any) -> None:
        if event == "start":
            submitted[payload.trial_id] = time.monotonic()
        else:
            training_s = payload.windows[-1].values["wall_s"]  # since the trial's Trial object was made
            latencies.append((submitted[payload.trial_id], time.monotonic() - training_s - submitted[payload.trial_id]))

    start = time.monotonic()
    result = tune(study, progress=progress)
    wall_s = time.monotonic() - start
    latencies.sort()
    statuses: dict[str, int] = {}
    for record in result.records:
        statuses[record.status.value] = statuses.get(record.status.value, 0) + 1
    return Timing(backend, wall_s, latencies[0][1], statistics.median(s for _, s in latencies[1:]), statuses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="max_steps per trial")
    parser.add_argument("--workers", type=int, default=2, help="trials at once; Ray gets as many CPUs")
    parser.add_argument("--rounds", type=int, default=2, help="local/Ray pairs, alternating")
    parser.add_argument("--dataset", default="mnist_784")
    parser.add_argument("--algorithm", default="svm")
    args = parser.parse_args()

    import ray

    from frugalml.executors import connect_ray as connect
    from frugalml.workloads import prepare_dataset, resolve_dataset

    prepare_dataset(resolve_dataset(args.dataset), seed=0)  # prepared once, outside every timing
    rounds: list[tuple[Timing, Timing]] = []
    init_s = 0.0
    for number in range(args.rounds):
        local = run("local", args)
        if number == 0:
            start = time.monotonic()
            connect(None, args.workers)  # the ray.init that backend="ray" does without an address
            init_s = time.monotonic() - start
        on_ray = run("ray", args)
        on_ray.wall_s += init_s if number == 0 else 0.0
        rounds.append((local, on_ray))
    ray.shutdown()

    print(f"16 trials: {args.dataset} {args.algorithm}, {args.steps} steps each, {args.workers} CPUs per backend")
    print(f"{'round':5} {'backend':8} {'wall s':>8} {'1st-trial latency s':>20} {'median latency, others s':>25}  statuses")
    for number, pair in enumerate(rounds, 1):
        for timing in pair:
            print(f"{number:<5} {timing.backend:8} {timing.wall_s:8.1f} {timing.first_latency_s:20.2f} "
                  f"{timing.median_latency_s:25.3f}  {timing.statuses}")
    local, on_ray = rounds[0]
    print(f"ray / local wall time, cold (ray.init included): {on_ray.wall_s / local.wall_s:.2f}")
    if len(rounds) > 1:
        warm = statistics.median(r.wall_s / l.wall_s for l, r in rounds[1:])
        print(f"ray / local wall time, warm (Ray already up): {warm:.2f}")
    print(f"ray fixed start-up: {init_s + on_ray.first_latency_s:.1f} s "
          f"(ray.init {init_s:.1f} s + first-trial latency {on_ray.first_latency_s:.1f} s)")


if __name__ == "__main__":
    main()
