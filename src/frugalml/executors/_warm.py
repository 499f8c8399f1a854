"""Imported last by the trial workers' forkserver: set-up every worker would repeat, done there once.

A worker is forked from the forkserver and inherits what this module made: threadpoolctl's
controller of the BLAS and OpenMP libraries loaded so far (finding and loading them costs a
fresh worker ~18 ms; limiting through this one ~1 ms). Nothing here starts a thread, so
forking stays safe; the driver never imports this module.
"""

from __future__ import annotations

import sys
from importlib.machinery import EXTENSION_SUFFIXES
from typing import Any

try:
    from threadpoolctl import ThreadpoolController

    _CONTROLLER: Any = ThreadpoolController()
except Exception:  # noqa: BLE001 - the workers then look for the libraries themselves, as before
    _CONTROLLER = None
_MODULES = frozenset(sys.modules)
_EXTENSIONS = tuple(EXTENSION_SUFFIXES)


def controller() -> Any:
    """The forkserver's controller, or None once an extension module was imported here since
    (unpickling a task, or the main script, may have loaded another BLAS or OpenMP)."""
    if _CONTROLLER is None:
        return None
    for name in sys.modules.keys() - _MODULES:
        if (getattr(sys.modules.get(name), "__file__", None) or "").endswith(_EXTENSIONS):
            return None
    return _CONTROLLER
