"""Runs a study: proposes configurations, runs trials on an executor, records results.

The local results store is written first (one transaction per finished trial);
MLflow second. Resuming re-runs only trials that were not stored, and re-logs to
MLflow any stored trial that did not reach it.

One job per module: ``_prepare`` (checking and preparing each workload), ``_plans``
(each workload's sampler and open configurations), ``_proposals`` (the next trial, or a
configuration skipped before it runs), ``_budgets`` (study-wide budgets), ``_schedule``
(the scheduling loop), ``_recorder`` (where an ended trial goes), ``_tracking`` (MLflow,
on its own thread) and ``_tuner`` (set-up, resume and shutdown).
"""

from __future__ import annotations

from frugalml.tuner._prepare import check_train_function
from frugalml.tuner._tuner import ExecutorFactory, ProgressCallback, Tuner, load_result, tune

__all__ = ["ExecutorFactory", "ProgressCallback", "Tuner", "check_train_function", "load_result", "tune"]
