"""Workloads: datasets (files, data dirs, the cache, OpenML; text columns one-hot encoded), the
thesis's SGD training and built-in PyTorch networks (``mlp``, ``cnn``; torch is imported only when
one trains).

Example::

    from frugalml.workloads import prepare_dataset, resolve_dataset, sgd_train

    data = prepare_dataset(resolve_dataset("diabetes"), seed=0)  # once, in the parent
    sgd_train(trial, data, algorithm="logistic_regression")     # in each worker
"""

from __future__ import annotations

from frugalml.workloads._algorithms import ALGORITHMS, algorithm_loss, check_algorithm, make_estimator
from frugalml.workloads._encode import MAX_CATEGORIES
from frugalml.workloads._networks import (
    NETWORK_BATCH_SIZE, NETWORK_FEATURES, NETWORK_PARAMS, NETWORKS, build_network, check_network, network_features,
    network_train,
)
from frugalml.workloads._prepare import ARRAY_NAMES, PreparedData, prepare_dataset
from frugalml.workloads._sgd import DATA_FORMATS, sgd_train, steps_planned
from frugalml.workloads._sources import BUILTIN_DATASETS, DatasetSource, resolve_dataset

__all__ = [
    "ALGORITHMS",
    "ARRAY_NAMES",
    "BUILTIN_DATASETS",
    "DATA_FORMATS",
    "DatasetSource",
    "MAX_CATEGORIES",
    "NETWORKS",
    "NETWORK_FEATURES",
    "NETWORK_BATCH_SIZE",
    "NETWORK_PARAMS",
    "PreparedData",
    "algorithm_loss",
    "build_network",
    "check_algorithm",
    "check_network",
    "make_estimator",
    "network_features",
    "network_train",
    "prepare_dataset",
    "resolve_dataset",
    "sgd_train",
    "steps_planned",
]
