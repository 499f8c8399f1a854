"""What preloading a user's frameworks in the forkserver saves: the same studies of a user's own
PyTorch and Lightning training functions, with the forkserver importing what the function's
source imports (now) and with the fixed scikit-learn set every study got before, alternated.

Each study: ``--trials`` trials of the test suite's small MLP on 3,000 mnist rows (``--epochs``),
2 workers, no MLflow. Per arm and framework it prints the median over rounds of the study's
wall time, the CPU-seconds the trials were charged (their worker processes: what each trial
cost), and the median peak memory (RSS - shared) a trial was measured at; then the ratios
now / before. The forkserver's own imports are paid once per study in both arms and are in the
wall time, not in the trials' CPU-seconds.

    python benchmarks/worker_imports.py [--rounds 3] [--trials 6] [--epochs 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

from frugalml.tuner._prepare import BUILTIN_IMPORTS

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "integrations"))  # torch_trainers: the test suite's user loops

ARMS = {"now": None, "before": BUILTIN_IMPORTS}  # before: every study's forkserver imported the built-in set


def study_once(framework: str, arm: str, trials: int, epochs: int, folder: Path) -> dict[str, float]:
    import torch_trainers

    import frugalml.tuner._prepare as prepare
    from frugalml import Search, Study, Workload, tune

    train = {"torch": torch_trainers.torch_mlp, "lightning": torch_trainers.lightning_mlp}[framework]
    study = Study(name=f"{framework}-{arm}", workloads=[Workload(train=train, eval_every=10, name="fit",
                                                                 train_kwargs={"epochs": epochs})],
                  search=Search(space={"hidden": [16, 24, 32, 40, 48, 56, 64, 72][:trials], "lr": [0.001]}),
                  workers=2, directory=str(folder / f"{framework}-{arm}-{time.monotonic_ns()}"), mlflow_uri=None)
    fixed = ARMS[arm]
    patch = mock.patch.object(prepare, "worker_imports", lambda train: fixed) if fixed else mock.MagicMock()
    started = time.perf_counter()
    with patch:
        result = tune(study)
    wall = time.perf_counter() - started
    assert all(r.status.value == "completed" for r in result.records), [r.error for r in result.records]
    return {"wall_s": wall, "trial_cpu_s": sum(r.cpu_s for r in result.records),
            "memory_mb": statistics.median(r.peak("memory_mb") for r in result.records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=1, help="of 47 steps (3,000 mnist rows, batch 64)")
    parser.add_argument("--frameworks", nargs="+", default=["torch", "lightning"])
    args = parser.parse_args()
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for framework in args.frameworks:
                for arm in (ARMS if round_ % 2 == 0 else reversed(ARMS)):
                    run = study_once(framework, arm, args.trials, args.epochs, Path(folder))
                    runs.setdefault((framework, arm), []).append(run)
                    print(f"round {round_} {framework:9s} {arm:6s} " + "  ".join(
                        f"{k} {v:.1f}" for k, v in run.items()), flush=True)
    print(f"\nmedians over {args.rounds} rounds ({args.trials} trials of {args.epochs} epoch(s), 2 workers)")
    print(f"{'framework':10s} {'arm':7s} {'wall s':>8s} {'trial CPU-s':>12s} {'memory MB':>10s}")
    for framework in args.frameworks:
        medians = {arm: {k: statistics.median(r[k] for r in runs[(framework, arm)]) for k in runs[(framework, arm)][0]}
                   for arm in ARMS}
        for arm, m in medians.items():
            print(f"{framework:10s} {arm:7s} {m['wall_s']:8.1f} {m['trial_cpu_s']:12.1f} {m['memory_mb']:10.0f}")
        now, before = medians["now"], medians["before"]
        print(f"{framework:10s} now/before: wall {now['wall_s'] / before['wall_s']:.2f}, "
              f"trial CPU-s {now['trial_cpu_s'] / before['trial_cpu_s']:.2f}, "
              f"memory {now['memory_mb'] - before['memory_mb']:+.0f} MB")


if __name__ == "__main__":
    main()
