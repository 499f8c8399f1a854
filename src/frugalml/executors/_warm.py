"""Imported last by the trial workers' forkserver: set-up every worker would repeat, done there once.

A worker is forked from the forkserver and inherits what this module made:

* threadpoolctl's controller of the BLAS and OpenMP libraries loaded so far (finding and
  loading them costs a fresh worker ~18 ms; limiting through this one ~1 ms);
* scikit-learn's first fit: its input checks discover narwhals' dataframe plugins by reading
  the metadata of every installed distribution, ~40 ms once per process;
* a frozen heap (``gc.freeze``, as Python's documentation advises before forking): the
  worker's collections skip the objects it inherited, so they neither spend its time on them
  nor write to (and so copy) the pages that hold them.

Measured (2 cores, 12 trials of mnist_784 / linear SVM, batch 30 and 300, 24 steps, OpenBLAS
loaded with one thread: :mod:`frugalml._blas_threads`): the trials' CPU-s, median of 6 runs
alternated, 5.27 without the last two, 4.81 with them, ~40 ms a trial.

Nothing here starts a thread, so forking stays safe; the driver never imports this module.
"""

from __future__ import annotations

import gc
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from typing import Any

try:
    from threadpoolctl import ThreadpoolController

    _CONTROLLER: Any = ThreadpoolController()
except Exception:  # noqa: BLE001 - the workers then look for the libraries themselves, as before
    _CONTROLLER = None
_MODULES = frozenset(sys.modules)  # before the fit: a library it loaded would make the controller stale
_EXTENSIONS = tuple(EXTENSION_SUFFIXES)


def _first_fit() -> None:
    if "sklearn.linear_model" not in sys.modules or _CONTROLLER is None:
        return
    try:
        import numpy as np
        from sklearn.linear_model import SGDClassifier

        X = np.zeros((2, 1))
        with _CONTROLLER.limit(limits=1):  # no BLAS or OpenMP pool may start in a process that forks
            SGDClassifier().partial_fit(X, np.array([0, 1]), classes=np.array([0, 1])).decision_function(X)
    except Exception:  # noqa: BLE001 - only a warm-up: each worker then pays it, as before
        pass


_first_fit()
gc.freeze()  # after the imports and the fit, with whatever garbage they left: shared, never a worker's own


def controller() -> Any:
    """The forkserver's controller, or None once an extension module was imported here since
    (unpickling a task, or the main script, may have loaded another BLAS or OpenMP)."""
    if _CONTROLLER is None:
        return None
    for name in sys.modules.keys() - _MODULES:
        if (getattr(sys.modules.get(name), "__file__", None) or "").endswith(_EXTENSIONS):
            return None
    return _CONTROLLER
