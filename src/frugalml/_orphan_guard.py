"""Imported first by frugalml's forkservers (trial workers', ``serve --workers``'), so that each dies with its driver.

CPython's forkserver notices its driver's death only once it has imported its preload
modules (seconds, for the ML stack) and waits on its pipe; a driver killed during those
seconds left it, and the resource tracker it holds open, running. The driver sets
``DRIVER_PID_ENV`` only while it starts the forkserver from its main thread (the kernel ties
the parent-death signal to the thread that started the process).
"""

import os

from frugalml.processes import DRIVER_PID_ENV, die_with_parent

_driver = os.environ.pop(DRIVER_PID_ENV, None)
if _driver is not None:
    die_with_parent(int(_driver))
