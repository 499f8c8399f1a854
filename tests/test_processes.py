"""frugalml.processes: child processes that cannot outlive the process that started them."""

from __future__ import annotations

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
