"""frugalml.processes: child processes that cannot outlive the process that started them."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

from helpers import still_running

POOL = """
import concurrent.futures, multiprocessing, os, sys, time
from frugalml.processes import exit_with_parent

if __name__ == "__main__":
    initializer = exit_with_parent if sys.argv[1] == "watch" else None
    pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                  initializer=initializer)
    print(pool.submit(os.getpid).result(), flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("initializer", ["watch", "none"])
def test_a_pool_process_started_with_exit_with_parent_exits_when_its_parent_is_killed(initializer):
    """A process pool's worker (a server's challenger) blocks on its task queue for ever once its
    parent is killed; ``exit_with_parent`` ends it at once. Without it, it stays: the control."""
    parent = subprocess.Popen([sys.executable, "-c", POOL, initializer], stdout=subprocess.PIPE, text=True)
    try:
        child = psutil.Process(int(parent.stdout.readline()))
    finally:
        parent.kill()
        parent.wait()
    alive = still_running([child], timeout=3.0)
    for process in alive:
        process.kill()
    assert bool(alive) == (initializer == "none")


def test_a_ctrl_c_python_swallows_in_a_callback_still_interrupts_at_the_next_check(monkeypatch):
    """A SIGINT handled inside a __del__ (or a weakref callback) raises there, where Python only prints
    'Exception ignored in ...': a reproduce run went on for 85 s. The handler counts it for the loop's check."""
    import gc
    import signal

    from frugalml import processes

    monkeypatch.setattr(processes, "_interrupts", 0)
    swallowed = []
    monkeypatch.setattr("sys.unraisablehook", lambda unraisable: swallowed.append(unraisable.exc_type))

    class Collected:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs at the next bytecodes: here, inside __del__
                pass

    restore = processes.interrupt_on_sigint()
    try:
        processes.raise_if_interrupted()  # nothing yet
        item = Collected()
        del item
        gc.collect()
        assert swallowed == [KeyboardInterrupt]  # Python swallowed it
        with pytest.raises(KeyboardInterrupt):
            processes.raise_if_interrupted()  # the loop's check does not
    finally:
        restore()
