"""Re-measure training step time for both sides here and now, interleaved.

Step times stored with a study were measured on whatever machine ran it, under
whatever else was running; a baseline tuned last month on another runner is not a
fair comparison. So the gate re-runs each side's configuration ``rounds`` times, one
trial at a time in this process (no worker start-up; the same way for both sides),
alternating A B B A ..., and compares those windows. Memory is not re-measured:
peak RSS is a property of the configuration, stable across runs, and the stored
trials measured it from a separate worker process.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from frugalml.executors import InProcessExecutor
from frugalml.metrics import MEAN_STEP_MS
from frugalml.records import TrialRecord
from frugalml.search import Search
from frugalml.study import Study, Workload
from frugalml.tuner import tune


@dataclass(frozen=True)
class Recipe:
    """How a side's configuration was trained: enough to train it again."""

    workload: Mapping[str, Any]
    params: Mapping[str, Any]
    seed: int = 0
    data_dir: str | None = None


def steady_step_times(record: TrialRecord) -> list[float]:
    """A trial's window step times without its first window (warm-up: imports, caches) when it has three or more."""
    times = [w.values[MEAN_STEP_MS] for w in record.windows if MEAN_STEP_MS in w.values]
    return times[1:] if len(times) >= 3 else times


def _study(recipe: Recipe, name: str, directory: Path) -> Study:
    workload = dict(recipe.workload)
    workload["name"] = "gate"
    return Study(name=name, workloads=[Workload(**workload)], search=Search(space=dict(recipe.params)), seed=recipe.seed,
                 data_dir=recipe.data_dir, directory=str(directory / name), mlflow_uri=None)


def step_times(recipes: Sequence[Recipe], rounds: int) -> list[list[list[float]]]:
    """Per recipe, one measurement per round: the median step time over the trial's windows
    (warm-up window dropped). Interference from other processes only ever adds time, in
    bursts; the median of a round ignores the windows a burst hit, and the gate compares each
    recipe's fastest round, the one bursts hit least (the rounds' mean below 5 rounds). A round
    whose trial timed no step adds nothing."""
    found: list[list[list[float]]] = [[] for _ in recipes]
    with tempfile.TemporaryDirectory(prefix="frugalml-gate-") as tmp:
        for k in range(rounds):
            order = list(range(len(recipes)))
            for i in order if k % 2 == 0 else reversed(order):
                result = tune(_study(recipes[i], f"side{i}-round{k}", Path(tmp)), executor=InProcessExecutor)
                for record in result.records:
                    if times := steady_step_times(record):
                        found[i].append([statistics.median(times)])
    return found
