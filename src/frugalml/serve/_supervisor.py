"""``frugalml serve MODEL --workers N``: N worker processes and one monitoring state.

The parent process loads the model once (to fail early, and for the monitor's reference;
each worker loads that version from where the parent found it, without the registry, and
takes the parent's fingerprint of a ``--reference`` table rather than making it again),
runs the :class:`Hub` (drift, quality, alerts, prediction ids, the summed counters) on a
Unix socket in a private folder with a random key, and starts N workers
(:mod:`frugalml.serve._worker`), each listening on the same port with ``SO_REUSEPORT``. It
restarts a worker that dies (its ids stay valid: the hub keeps them) and stops them all on
SIGTERM or Ctrl-C; killed with -9, it takes them along (``PR_SET_PDEATHSIG`` and the stdin
pipe each worker watches).
"""

from __future__ import annotations

import logging
import os
import pickle
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import replace
from multiprocessing.connection import Listener
from typing import Any

from frugalml.exceptions import FrugalError
from frugalml.serve._hub import Hub, serve_hub
from frugalml.serve._messages import WorkerSpec

logger = logging.getLogger("frugalml.serve")
MAX_RESTARTS = 5  # in RESTART_WINDOW_S; more and the server stops rather than crash-loop
RESTART_WINDOW_S = 60.0
_WORKER_MAIN = "from frugalml.serve._worker import main; main()"


def _start(spec: WorkerSpec) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", _WORKER_MAIN], stdin=subprocess.PIPE, close_fds=True)
    assert process.stdin is not None
    process.stdin.write(pickle.dumps(spec))
    process.stdin.flush()  # the pipe stays open: its end is how the worker knows the parent is alive
    return process


def _stop(processes: list[subprocess.Popen], timeout: float = 15.0) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdin is not None:
            process.stdin.close()


def _wait_ready(hub: Hub, processes: list[subprocess.Popen], stop: threading.Event) -> None:
    """Until every worker has loaded the model and said hello; a worker that exits first is an error."""
    while not all(hub.workers.get(i) is not None and hub.workers[i].pid == p.pid for i, p in enumerate(processes)):
        for i, process in enumerate(processes):
            if process.poll() is not None:
                raise FrugalError(f"worker {i} exited with status {process.returncode} while starting; "
                                  "see its log above.")
        if stop.wait(0.05):
            return


def run_workers(served: Any, config: Any, workers: int, *, host: str, port: int, settings: Any,
                log_level: str = "info", access_log: bool = False, started: Any = None) -> None:
    """Serve ``served`` (already loaded) with ``workers`` processes until SIGTERM or Ctrl-C;
    ``started()`` is called once every worker is ready."""
    hub = Hub(served, config, settings.max_feature_series)
    folder = tempfile.mkdtemp(prefix="frugalml-serve-")
    address = os.path.join(folder, "monitor.sock")
    authkey = secrets.token_bytes(32)
    listener = Listener(address, family="AF_UNIX", authkey=authkey)
    stop = threading.Event()
    serve_hub(hub, listener, stop)
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    worker_settings = replace(settings, poll_registry_s=0)  # one monitor, one model: no worker swaps alone

    def spec(index: int) -> WorkerSpec:
        return WorkerSpec(index, served.uri, served.location, worker_settings, config, host, port, address, authkey,
                          os.getpid(), log_level, access_log,
                          reference=served.reference if settings.reference is not None else None)

    processes: list[subprocess.Popen] = []
    try:
        for index in range(workers):
            processes.append(_start(spec(index)))
        _wait_ready(hub, processes, stop)
        if stop.is_set():
            return
        if started is not None:
            started()
        exits: deque[float] = deque()
        while not stop.wait(0.2):
            for index, process in enumerate(processes):
                if process.poll() is None:
                    continue
                now = time.monotonic()
                exits.append(now)
                while exits and now - exits[0] > RESTART_WINDOW_S:
                    exits.popleft()
                if len(exits) > MAX_RESTARTS:
                    raise FrugalError(f"workers exited {len(exits)} times within {RESTART_WINDOW_S:g} s (worker "
                                      f"{index}: status {process.returncode}); stopping. See the log above.")
                logger.warning("worker %d (pid %d) exited with status %s; starting it again", index, process.pid,
                               process.returncode)
                if process.stdin is not None:
                    process.stdin.close()
                processes[index] = _start(spec(index))
    finally:
        _stop(processes)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        stop.set()
        listener.close()  # its daemon threads end with the process
        hub.stop()
        shutil.rmtree(folder, ignore_errors=True)
