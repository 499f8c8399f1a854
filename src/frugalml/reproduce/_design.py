"""The thesis's experimental design as frugalml studies (full and ``--quick``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from frugalml.exceptions import DataError
from frugalml.search import Search
from frugalml.study import Study, Workload

BATCH_SIZES = [30, 300, 3000, 30000]
LEARNING_RATES = [0.1, 0.01, 0.001, 0.0001]
QUICK_LEARNING_RATES = [0.01, 0.0001]
MEMORY_BUDGET_MB = 400
LARGE = {"mnist_784", "wave_energy", "casp_protein"}
#: (dataset, task algorithms); wave_energy may be replaced by its labelled substitute.
DATASETS = {
    "mnist_784": ("svm", "perceptron"),
    "diabetes": ("svm", "perceptron", "logistic_regression"),
    "wave_energy": ("svm",),
    "red_wine": ("svm",),
}
SHAPES = {"mnist_784": (49000, 784, 10), "diabetes": (537, 8, 1), "wave_energy": (50400, 32, 1),
          "casp_protein": (32011, 9, 1), "red_wine": (1119, 11, 1)}


@dataclass(frozen=True)
class Design:
    """How big the run is: the full thesis design or the quick one."""

    quick: bool
    repeats: int
    learning_rates: tuple[float, ...]
    workers: int = 2

    def steps(self, dataset: str) -> tuple[int, int]:
        """(max_steps, eval_every) for a dataset."""
        if not self.quick:
            return 1000, 100
        return (24, 6) if dataset == "mnist_784" else (200, 50)


def design(quick: bool, workers: int = 2) -> Design:
    if quick:
        return Design(True, 2, tuple(QUICK_LEARNING_RATES), workers)
    return Design(False, 3, tuple(LEARNING_RATES), workers)


def resolve_wave_energy(data_dir: str | None = None) -> tuple[str, str | None]:
    """``("wave_energy", None)`` when it can be had, else the labelled substitute and why."""
    from frugalml.workloads import resolve_dataset  # lazy: scikit-learn (~1 s), only to size the design

    try:
        resolve_dataset("wave_energy", data_dir=data_dir)
        return "wave_energy", None
    except DataError as error:
        return "casp_protein", (
            f"wave_energy is not available ({error}). Using casp_protein (UCI CASP protein structure) as a "
            "labelled SUBSTITUTE: a different real regression dataset, results not comparable to the thesis's "
            "wave_energy numbers."
        )


def _name(dataset: str, algorithm: str, data_format: str) -> str:
    label = "casp_protein-SUBSTITUTE-for-wave_energy" if dataset == "casp_protein" else dataset
    return f"{label}-{algorithm}-{data_format}"


def _workload(dataset: str, algorithm: str, data_format: str, plan: Design) -> Workload:
    max_steps, eval_every = plan.steps(dataset)
    return Workload(dataset=dataset, algorithm=algorithm, data_format=data_format, epochs=10_000,
                    max_steps=max_steps, eval_every=eval_every, name=_name(dataset, algorithm, data_format))


def thesis_studies(out: Path, plan: Design, wave_energy: str = "casp_protein",
                   data_dir: str | None = None) -> tuple[Study, Study]:
    """The main study (every dataset x algorithm on the numpy path, plus SVM on the pandas
    path) and the 400 MB memory budget study (large datasets)."""
    workloads, budgeted = [], []
    for dataset, algorithms in DATASETS.items():
        dataset = wave_energy if dataset == "wave_energy" else dataset
        workloads += [_workload(dataset, algorithm, "numpy", plan) for algorithm in algorithms]
        workloads.append(_workload(dataset, "svm", "pandas", plan))
        if dataset in LARGE:
            formats = ("pandas",) if plan.quick else ("numpy", "pandas")
            budgeted += [_workload(dataset, "svm", f, plan) for f in formats]
    search = Search(space={"batch_size": list(BATCH_SIZES), "learning_rate": list(plan.learning_rates)})
    common = dict(search=search, workers=plan.workers, repeats=plan.repeats, mlflow_uri=None, data_dir=data_dir)
    main = Study(name="thesis", workloads=workloads, directory=str(out / "studies" / "thesis"), **common)
    budget = Study(name=f"thesis-budget-{MEMORY_BUDGET_MB}mb", workloads=budgeted,
                   directory=str(out / "studies" / f"budget-{MEMORY_BUDGET_MB}mb"),
                   budget={"max_memory_mb": MEMORY_BUDGET_MB}, **{**common, "repeats": 1 if plan.quick else plan.repeats})
    return main, budget


def workload_meta(study: Study) -> dict[str, dict[str, object]]:
    """Workload name → dataset, data_format, and whether the dataset is large."""
    return {w.name: {"dataset": w.dataset, "data_format": w.data_format, "large": w.dataset in LARGE}
            for w in study.workloads}


def expected_seconds(studies: tuple[Study, ...]) -> float:
    """A rough run-time model: per step ~2 ms + 1.5 ns per batch row x feature x output, plus
    an evaluation every window and 1.5 s per trial start, spread over the workers."""
    total = 0.0
    for study in studies:
        for workload in study.workloads:
            n_train, features, outputs = SHAPES.get(workload.dataset, (10_000, 50, 1))
            for batch in study.search.space["batch_size"]:
                rows = min(batch, n_train)
                steps = min(workload.max_steps or math.inf, math.ceil(n_train / rows) * workload.epochs)
                step_s = 0.002 + 1.5e-9 * rows * features * outputs
                windows = steps / workload.eval_every
                eval_s = 1.5e-9 * (0.3 * n_train / 0.7) * features * outputs
                per_trial = steps * step_s + windows * eval_s + 1.5
                total += per_trial * len(study.search.space["learning_rate"]) * study.repeats
    return total / max(1, studies[0].workers)
