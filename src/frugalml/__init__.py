"""frugalml: resource-aware hyperparameter tuning.

Measure each trial's system cost (step time, memory, CPU, I/O, GPU) beside its ML
metrics, and stop the trials that break a resource budget.

Example:
    >>> import frugalml
    >>> study = frugalml.Study(
    ...     name="diabetes-svm",
    ...     workloads=[frugalml.Workload(dataset="diabetes", algorithm="svm")],
    ...     search=frugalml.Search(space={"batch_size": [30, 300], "learning_rate": [0.01]}),
    ...     budget={"max_memory_mb": 400},
    ... )
    >>> result = frugalml.tune(study)                     # doctest: +SKIP
"""

import importlib
from typing import Any

from frugalml.exceptions import ConfigError, DataError, FrugalError, StoreError, TrialUsageError

# The rest is imported on first use (PEP 562): `frugalml serve` and the trial workers import
# frugalml's subpackages without paying for Optuna, the search space and the tuner.
_LAZY = {
    **dict.fromkeys(("StopInfo", "TrialRecord", "TrialStatus", "Window"), "frugalml.records"),
    **dict.fromkeys(("ComputeAccount", "ConfigSummary", "StudyResult", "best_feasible", "compute_account",
                     "summarize"), "frugalml.results"),
    "Search": "frugalml.search",
    "ResultStore": "frugalml.store",
    **dict.fromkeys(("Study", "Workload", "load_study"), "frugalml.study"),
    "Trial": "frugalml.trial",
    **dict.fromkeys(("Tuner", "load_result", "tune"), "frugalml.tuner"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'frugalml' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__version__ = "0.1.0"

__all__ = [
    "ComputeAccount",
    "ConfigError",
    "ConfigSummary",
    "DataError",
    "FrugalError",
    "ResultStore",
    "Search",
    "StopInfo",
    "StoreError",
    "Study",
    "StudyResult",
    "Trial",
    "TrialRecord",
    "TrialStatus",
    "TrialUsageError",
    "Tuner",
    "Window",
    "Workload",
    "best_feasible",
    "compute_account",
    "load_result",
    "load_study",
    "summarize",
    "tune",
]
