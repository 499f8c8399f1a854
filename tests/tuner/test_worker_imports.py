"""What the trial workers' forkserver imports for a user's training function: the fork-safe
libraries its module's source imports where the function can reach them."""

from __future__ import annotations

import functools
import importlib

from frugalml.tuner._worker_imports import worker_imports

MODULE = """
import json
from typing import TYPE_CHECKING

import numpy as np
from sklearn.linear_model import SGDClassifier

try:
    import torch
except ImportError:  # a fallback the worker imports only where the first is missing
    import pytorch_lightning
if TYPE_CHECKING:
    import transformers
if __name__ == "__main__":
    import pandas


def helper():
    import lightning  # another function's import: not this training function's


def load():
    import xgboost.dask  # a framework's submodule: its package only
    import scipy.sparse


def train(trial, n=1):
    load()
    from frugalml.integrations.torch import Batches
    from . import sibling  # relative: the user's own
    import xml.dom  # not a listed library
"""


def test_the_listed_libraries_the_function_can_reach_in_source_order(module):
    name = module("user_train", MODULE)
    expected = ("numpy", "sklearn.linear_model", "torch", "frugalml.integrations.torch", "xgboost", "scipy.sparse",
                "torch._dynamo")
    assert worker_imports(f"{name}:train") == expected
    assert worker_imports(f"{name}:helper") == ("numpy", "sklearn.linear_model", "torch", "lightning", "torch._dynamo")
    train = importlib.import_module(name).train  # a function: its module's file
    assert worker_imports(train) == worker_imports(functools.partial(train, n=2)) == expected


def test_the_users_own_modules_are_followed_to_the_libraries_they_import(module, tmp_path):
    (tmp_path / "projpkg").mkdir()
    (tmp_path / "projpkg" / "__init__.py").write_text("import os, json, re, math, string\nimport pandas\n")
    (tmp_path / "projpkg" / "data.py").write_text("import csv\n")
    (tmp_path / "projpkg" / "model.py").write_text("import torch\nfrom projpkg import util\n")
    (tmp_path / "projpkg" / "util.py").write_text("from projpkg.model import *\nimport lightning\n")  # a cycle
    name = module("proj_train", "from projpkg.data import load\nfrom projpkg.model import build\n\n"
                                "def train(trial):\n    build()\n")
    assert worker_imports(f"{name}:train") == ("pandas", "torch", "lightning", "torch._dynamo")
    (tmp_path / "projpkg" / "fit.py").write_text("from .model import build\nfrom . import data\n\ndef fit(trial):\n"
                                                 "    pass\n")  # relative, and the package's own __init__
    assert worker_imports("projpkg.fit:fit") == ("pandas", "torch", "lightning", "torch._dynamo")
    (tmp_path / "kerasmodel.py").write_text('import os\nos.environ["KERAS_BACKEND"] = "jax"\nimport keras\n')
    assert worker_imports(module("keras_user", "import kerasmodel\n\ndef train(trial):\n    pass\n") + ":train") == ()


def test_a_function_without_a_source_file_preloads_the_modules_its_globals_hold():
    namespace = {"np": importlib.import_module("numpy"), "json": importlib.import_module("json")}
    exec("def train(trial):\n    return np.zeros(1)\n", namespace)  # as a notebook cell defines it
    assert worker_imports(namespace["train"]) == ("numpy",)


KERAS = """
from frugalml.integrations.keras import FrugalmlCallback
import keras

def train(trial):
    pass
"""


def test_keras_is_named_unless_the_module_chooses_its_backend_itself(module):
    # the forkserver imports it only where it takes the torch backend there (frugalml._preload)
    assert worker_imports(f"{module('keras_train', KERAS)}:train") == (
        "frugalml.integrations.keras", "keras", "torch._dynamo")
    chooses = module("keras_own_backend", 'import os\nos.environ["KERAS_BACKEND"] = "jax"\n' + KERAS)
    assert worker_imports(f"{chooses}:train") == ()  # its choice is made in the worker, after the preload


def test_the_forkserver_imports_keras_only_where_it_would_take_the_torch_backend(monkeypatch):
    from frugalml._preload import _keras_on_torch

    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert not _keras_on_torch()
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert _keras_on_torch()
    monkeypatch.delenv("KERAS_BACKEND")
    assert _keras_on_torch() is (importlib.util.find_spec("tensorflow") is None)  # Keras's default, if installed


def test_what_has_no_readable_source_preloads_nothing(module):
    assert worker_imports("no_such_module_here:train") == ()
    assert worker_imports(module("broken", "def train(trial):\n    import torch\n  oops\n") + ":train") == ()
    assert worker_imports(len) == ()
