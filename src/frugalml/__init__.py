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

from frugalml.exceptions import ConfigError, DataError, FrugalError, StoreError, TrialUsageError
from frugalml.records import StopInfo, TrialRecord, TrialStatus, Window
from frugalml.results import ComputeAccount, ConfigSummary, StudyResult, best_feasible, compute_account, summarize
from frugalml.search import Search
from frugalml.store import ResultStore
from frugalml.study import Study, Workload, load_study
from frugalml.trial import Trial
from frugalml.tuner import Tuner, load_result, tune

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
