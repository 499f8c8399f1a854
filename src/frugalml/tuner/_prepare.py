"""Checking and preparing a workload before any trial: its training function, or its built-in data."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Mapping

from frugalml.budgets import serving as serving_budgets
from frugalml.deploy import LOG_MODEL_HINT
from frugalml.exceptions import ConfigError
from frugalml.executors import preload, reset_preload, resolve_train_function, worker_context
from frugalml.study import Study, Workload
from frugalml.tuner._train_source import IS_A_CLASS, NOT_TRAINING_ARGUMENTS, source_verdict
from frugalml.tuner._worker_imports import worker_imports


#: what the built-in workloads' workers import: scikit-learn's SGD models, pandas, the training functions
BUILTIN_IMPORTS = ("sklearn.linear_model", "pandas", "frugalml.workloads")
NETWORK_IMPORTS = ("torch", "torch._dynamo")  # torch's optimisers import torch._dynamo (1.5 CPU-s)


def start_workers_early(study: Study) -> None:
    """Start the local trial workers' forkserver now, so that its imports (numpy, and what
    :func:`preload_for` named: scikit-learn, torch... seconds) overlap what comes before the first
    trial (a built-in dataset's preparation) instead of delaying it."""
    worker_context()


def preload_for(study: Study) -> None:
    """Have the workers' forkserver import what every workload's workers import, no more: a
    library only some of them use would count in the others' memory (inherited heap counts in
    RSS - shared). A Ray node's forkserver is told the same."""
    reset_preload()
    needs = [workload_imports(workload) for workload in study.workloads]
    preload(*(module for module in needs[0] if all(module in other for other in needs[1:])))


def workload_imports(workload: Workload) -> tuple[str, ...]:
    """What the workers of ``workload`` import: a user's training function's libraries as its
    source names them (:mod:`frugalml.tuner._worker_imports`)."""
    if workload.train is not None:
        return worker_imports(workload.train)
    from frugalml.workloads import NETWORKS  # lazy: a user's own training function never needs it

    return (*BUILTIN_IMPORTS, *NETWORK_IMPORTS) if workload.algorithm in NETWORKS else BUILTIN_IMPORTS


def prepare(workload: Workload, study: Study) -> tuple[Any, dict[str, Any], int | None]:
    """Resolve the training function and its arguments; built-in data is prepared here, once."""
    if workload.train is not None:
        if study.backend == "local":  # a Ray cluster may hold modules the driver lacks
            source = check_train_function(workload.train, workload.train_kwargs)
            if study.measures_serving:
                _check_logs_a_model(workload, source, sorted(serving_budgets(study.budget)) or ["as objectives"])
        return workload.train, dict(workload.train_kwargs), None
    # lazy: a user's own training function needs none of it (the workers import scikit-learn, not the driver)
    from frugalml.workloads import (
        NETWORKS, check_algorithm, check_network, network_train, prepare_dataset, resolve_dataset, sgd_train,
    )

    if study.data_dir and not Path(study.data_dir).expanduser().is_dir():
        raise ConfigError(f"[study] data_dir {study.data_dir!r} is not a folder; fix the path or remove data_dir.")
    source = resolve_dataset(workload.dataset, path=workload.path, target=workload.target, data_dir=study.data_dir)
    data = prepare_dataset(source, seed=study.seed)
    if workload.algorithm in NETWORKS:  # every listed architecture must build on this data: fail now
        for params in _listed_values(study.search, workload.params):
            check_network(workload.algorithm, params, data.n_features)
        train = network_train
    else:
        check_algorithm(workload.algorithm, data.task, dataset=data.name)  # a mismatch fails now, not in a trial
        train = sgd_train
    if workload.data_format == "pandas":
        data.frame()  # writes the column-ordered copy once, not in the first trial
    kwargs = dict(
        data=data, algorithm=workload.algorithm, epochs=workload.epochs, max_steps=workload.max_steps,
        data_format=workload.data_format, seed=study.seed, eval_rows=workload.eval_rows,
    )
    return train, kwargs, data.n_train


def check_train_function(train: Any, train_kwargs: Mapping[str, Any]) -> str | None:
    """A one-line ConfigError, before any trial, when ``train`` is not a Python function that
    takes the trial first (``train = "os:system"`` would fail every trial the same way).

    A ``"module:function"`` that is a plain ``def`` in a source file is checked from its source,
    without importing the module (:mod:`frugalml.tuner._train_source`); returns the source of the
    function's module where it could be read."""
    if isinstance(train, str) and (verdict := source_verdict(train, train_kwargs)) is not None:
        if verdict.problem is not None:
            raise _not_a_training_function(train, verdict.problem)
        return verdict.source
    function = resolve_train_function(train)
    call = function if inspect.isfunction(inspect.unwrap(function)) or inspect.ismethod(function) \
        or isinstance(function, functools.partial) else getattr(type(function), "__call__", None)
    is_python = not inspect.isclass(function) and (call is function or inspect.isfunction(call))
    try:
        inspect.signature(function).bind(object(), **train_kwargs)
    except (TypeError, ValueError):
        is_python = False
    if not is_python:
        raise _not_a_training_function(train, IS_A_CLASS if inspect.isclass(function) else "it is a built-in"
                                       if inspect.isbuiltin(function) else NOT_TRAINING_ARGUMENTS)
    module = inspect.getmodule(inspect.unwrap(function))
    try:
        return inspect.getsource(module) if module is not None else None
    except (OSError, TypeError):  # no source to read (a compiled module)
        return None


def _not_a_training_function(train: Any, kind: str) -> ConfigError:
    return ConfigError(f"{train!r} is not a training function ({kind}); write one as "
                       "def train(trial, **train_kwargs) and name it 'module:function'.")


def _check_logs_a_model(workload: Workload, source: str | None, keys: list[str]) -> None:
    """Serving budgets are measured on the model a trial keeps: a one-line ConfigError, before any
    trial, when the training function's module (its ``source``) never calls ``trial.log_model``.
    Without a source to read, the first trial will say it."""
    if source is not None and "log_model" not in source:
        name = workload.train if isinstance(workload.train, str) \
            else getattr(inspect.unwrap(workload.train), "__qualname__", workload.train)
        raise ConfigError(f"workload '{workload.name}': the study measures serving costs "
                          f"({', '.join(keys)}) but {name} never keeps its model; {LOG_MODEL_HINT}.")


def _listed_values(search: Any, fixed: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One configuration per listed value (or range bound: a float unless the range is
    ``int``) of each parameter, and each grid point, the rest fixed: enough to find a
    value that cannot be built."""
    configs = [dict(fixed)]
    for name, spec in search.space.items():
        if isinstance(spec, Mapping):
            values = [spec["low"], spec["high"]] if spec.get("int") else [float(spec["low"]), float(spec["high"])]
        else:
            values = spec if isinstance(spec, list) else [spec]
        configs += [{**fixed, name: value} for value in values]
    configs += [{**fixed, **point} for point in search.points or ()]
    return configs
