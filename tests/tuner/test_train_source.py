"""A ``"module:function"`` training function is checked from its source, without importing it in
the driver; what the source cannot settle is imported, as before."""

from __future__ import annotations

import os
import sys

import pytest

from frugalml import Search, Study, Workload, tune
from frugalml.exceptions import ConfigError
from frugalml.records import TrialStatus
from frugalml.tuner import check_train_function
from frugalml.tuner._train_source import IS_A_CLASS, NOT_TRAINING_ARGUMENTS, source_verdict

PLAIN = "def train(trial, steps=3):\n    pass\n"


def test_a_plain_def_is_checked_from_its_source_and_never_imported(module):
    name = module("srcplain", "import os\nfrom collections import OrderedDict\n" + PLAIN)
    verdict = source_verdict(f"{name}:train", {"steps": 5})
    assert verdict is not None and verdict.problem is None and "def train" in verdict.source
    assert source_verdict(f"{name}:train", {"epochs": 5}).problem == NOT_TRAINING_ARGUMENTS
    assert name not in sys.modules


@pytest.mark.parametrize("text, problem", [
    ("class train:\n    def __init__(self, trial):\n        pass\n", IS_A_CLASS),
    ("def train():\n    pass\n", NOT_TRAINING_ARGUMENTS),
    ("def train(trial, *, lr):\n    pass\n", NOT_TRAINING_ARGUMENTS),  # a keyword without a default, not given
    ("async def train(trial, **options):\n    pass\n", None),
    ("def train(trial, /, steps: int = len('ignored'), *rest, lr=0.1, **kw) -> None:\n    train = 1\n", None),
])
def test_the_source_settles_what_a_plain_def_or_class_is(module, text, problem):
    name = module(f"src{abs(hash(text))}", text)
    verdict = source_verdict(f"{name}:train", {"steps": 1})
    assert verdict is not None and verdict.problem == problem


@pytest.mark.parametrize("text", [
    "import functools\n@functools.lru_cache\n" + PLAIN,  # a decorator may return anything
    PLAIN + "train = print\n",  # bound twice
    "from os import path as train\n",  # bound by an import
    "from os.path import *\n" + PLAIN,  # a star import may bind it too
    PLAIN + "def __getattr__(name):\n    return print\n",
    "import sys\nif sys.platform:\n    " + PLAIN.replace("\n    ", "\n        "),  # conditional
    "try:\n    import no_such_dependency_xyz\nexcept ImportError:\n    pass\n" + PLAIN + "globals()['train'] = 1\n",
    "def other():\n    global train\n    train = print\n" + PLAIN,
    "import no_such_dependency_xyz\n" + PLAIN,  # importing names the missing package
    "def train(trial:\n",  # a syntax error: importing reports it
])
def test_what_the_source_cannot_settle_is_left_to_an_import(module, text):
    name = module(f"src{abs(hash(text))}", text)
    assert source_verdict(f"{name}:train", {}) is None


def test_modules_without_python_source_are_imported():
    assert source_verdict("builtins:print", {}) is None  # built in
    assert source_verdict("math:sqrt", {}) is None  # an extension module
    assert source_verdict("no_such_module_xyz:train", {}) is None
    # math.sqrt, not print: in a full suite some library had replaced builtins.print with a Python function
    with pytest.raises(ConfigError, match="not a training function .it is a built-in"):
        check_train_function("math:sqrt", {})


def test_the_check_reads_the_source_once_and_the_serving_check_uses_it(module):
    name = module("srclogs", "def train(trial):\n    trial.log_model(object())\n")
    assert "trial.log_model" in check_train_function(f"{name}:train", {})
    name = module("srcclass", "class train:\n    pass\n")
    with pytest.raises(ConfigError, match=r"'srcclass:train' is not a training function \(it is a class\)"):
        check_train_function(f"{name}:train", {})


IMPORT_LOG = """
import os

with open(os.environ["IMPORT_LOG"], "a") as log:
    log.write(f"{os.getpid()}\\n")


def train(trial, steps=4):
    for _ in range(steps):
        if trial.step(1.0):
            trial.report(val_loss=1.0)
"""


def test_the_driver_never_imports_the_training_module_its_workers_do(module, tmp_path, monkeypatch):
    """Importing a user's module in the driver only to check it cost the driver the user's framework
    (a Keras module: ~9 CPU-s) before the first trial could start."""
    log = tmp_path / "imports.log"
    monkeypatch.setenv("IMPORT_LOG", str(log))
    name = module("srcimportlog", IMPORT_LOG)
    study = Study(name="src", directory=str(tmp_path / "study"), workers=2, mlflow_uri=None,
                  workloads=[Workload(train=f"{name}:train", eval_every=2, name="w")],
                  search=Search(space={"x": [1, 2]}))
    result = tune(study)
    assert [r.status for r in result.records] == [TrialStatus.COMPLETED] * 2, [r.error for r in result.records]
    importers = log.read_text().split()
    assert len(importers) == 2 and str(os.getpid()) not in importers  # one import per worker, none here
