"""Child processes that cannot outlive the process that started them."""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading

import psutil

_PR_SET_PDEATHSIG = 1
DRIVER_PID_ENV = "FRUGALML_DRIVER_PID"  # set for a child that must die with the driver before it can ask


def die_with_parent(driver_pid: int | None = None) -> None:
    """Ask Linux to SIGKILL this process when the thread that started it dies (a killed driver
    leaves no orphans); elsewhere a no-op.

    The request covers only deaths after it is made, so given ``driver_pid`` (the process this
    one must not outlive: its parent, or further up), this process also kills itself at once if
    that one is already gone.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if driver_pid is not None and not _alive(driver_pid):
        os.kill(os.getpid(), signal.SIGKILL)


def _alive(pid: int) -> bool:
    if pid == os.getppid():
        return True
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def exit_with_parent() -> None:
    """In a process started by :mod:`multiprocessing`: exit as soon as its parent process is gone.

    For a child started from any thread of its parent (a process pool's, started on a request's
    thread): the parent-death signal of :func:`die_with_parent` would fire when that thread
    ends. This waits on the parent's sentinel instead, on a daemon thread of the child; a
    no-op where the start method gives no sentinel.
    """
    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return

    def wait() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(0)

    threading.Thread(target=wait, name="frugalml-exit-with-parent", daemon=True).start()
