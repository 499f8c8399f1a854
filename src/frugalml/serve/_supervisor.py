"""``frugalml serve MODEL --workers N``: N worker processes and one monitoring state.

The parent process loads the model once (to fail early, and for the monitor's reference;
each worker loads that version from where the parent found it, without the registry, and
takes the parent's fingerprint of a ``--reference`` table rather than making it again),
runs the :class:`Hub` (drift, quality, alerts, prediction ids, the summed counters) on a
Unix socket in a private folder with a random key, and starts N workers
(:mod:`frugalml.serve._worker`), each listening on the same port with ``SO_REUSEPORT``. It
restarts a worker that dies (its ids stay valid: the hub keeps them) and stops them all on
SIGTERM or Ctrl-C; killed with -9, it takes them along (``PR_SET_PDEATHSIG`` and the parent's
sentinel each worker watches).

The workers are forked from a forkserver that imported the serving stack and the model's
flavour once (uvicorn, FastAPI, MLflow's pyfunc, scikit-learn's base or torch): a worker then starts
in a fraction of a second and ~0.2 CPU-s instead of ~3 (a worker started again, too), and
shares those modules' memory with its siblings until it writes to it (USS ~25 MB against
~160 for a process that imported them itself, for a scikit-learn model).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from dataclasses import replace
from multiprocessing.connection import Listener
from multiprocessing.process import BaseProcess
from typing import Any

from frugalml.exceptions import FrugalError
from frugalml.processes import ORPHAN_GUARD_MODULE, PRELOAD_MODULE, forkserver_running, stop_forkserver, use_forkserver
from frugalml.serve._hub import Hub, serve_hub
from frugalml.serve._messages import WorkerSpec
from frugalml.serve._worker import run

logger = logging.getLogger("frugalml.serve")
MAX_RESTARTS = 5  # in RESTART_WINDOW_S; more and the server stops rather than crash-loop
RESTART_WINDOW_S = 60.0
# what every worker imports before it loads the model, and the flavours' loaders that are safe to import
# before a fork (no Python thread; OpenBLAS's and pyarrow's native pools reset themselves in the child):
# others load in each worker, as Keras must (its backend)
SERVING_IMPORTS = ("uvicorn", "mlflow.pyfunc", "frugalml.serve._app", "frugalml.serve._model",
                   "frugalml.serve._remote", "frugalml.serve._server")
FLAVOUR_IMPORTS = {"sklearn": ("mlflow.sklearn", "sklearn.base"), "pytorch": ("mlflow.pytorch",)}


def _worker_context(flavors: list[str]) -> multiprocessing.context.BaseContext:
    """A forkserver that imported the serving stack and the model's flavour (spawn where there is none).
    It ignores SIGTERM as well as SIGINT: a stop sent to the whole process group (systemd's default)
    reaches each worker itself, which drains its requests; the forkserver ends with the server."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    modules = [*SERVING_IMPORTS, *(m for f in flavors for m in FLAVOUR_IMPORTS.get(f, ()))]
    return use_forkserver([ORPHAN_GUARD_MODULE, PRELOAD_MODULE], modules, ignore=(signal.SIGINT, signal.SIGTERM))


def _flavors(path: Any) -> list[str]:
    from mlflow.models import Model

    try:
        return list(Model.load(str(path)).flavors)
    except Exception:  # noqa: BLE001 - the parent loaded it: nothing to preload is all this can cost
        return []


def start_forkserver_for(path: Any) -> list[str]:
    """Start the workers' forkserver for the model at ``path`` now, so that it imports while this
    process loads the model; returns the model's flavours, for :func:`run_workers` to fork with."""
    flavors = _flavors(path)
    _worker_context(flavors)
    return flavors


def _start(spec: WorkerSpec, flavors: list[str]) -> BaseProcess:
    for _ in range(2):  # a forkserver that died while asked to fork: started again once
        process = _worker_context(flavors).Process(target=run, args=(spec,), name=f"frugalml-serve-worker-{spec.index}")
        try:
            process.start()
            return process
        except (OSError, EOFError) as error:
            failure = error
    raise FrugalError(f"cannot start worker {spec.index}: {type(failure).__name__}: {failure}")


def _stop(processes: list[BaseProcess], timeout: float = 15.0) -> None:
    for process in processes:
        if process.exitcode is None:
            process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
            process.join()
        process.close()


def _wait_ready(hub: Hub, processes: list[BaseProcess], stop: threading.Event) -> None:
    """Until every worker has loaded the model and said hello; a worker that exits first is an error."""
    while not all(hub.workers.get(i) is not None and hub.workers[i].pid == p.pid for i, p in enumerate(processes)):
        for i, process in enumerate(processes):
            if process.exitcode is not None:
                raise FrugalError(f"worker {i} exited with status {process.exitcode} while starting; "
                                  "see its log above.")
        if stop.wait(0.05):
            return


def run_workers(served: Any, config: Any, workers: int, *, host: str, port: int, settings: Any,
                flavors: list[str], log_level: str = "info", access_log: bool = False, started: Any = None) -> None:
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
                          os.getpid(), log_level, access_log, served.reference)

    processes: list[BaseProcess] = []
    try:
        for index in range(workers):
            if stop.is_set():  # Ctrl-C while the forkserver imported
                return
            processes.append(_start(spec(index), flavors))
        _wait_ready(hub, processes, stop)
        if stop.is_set():
            return
        if started is not None:
            started()
        exits: deque[float] = deque()
        while not stop.wait(0.2):
            dead = [index for index, process in enumerate(processes) if process.exitcode is not None]
            if not dead:
                continue
            # the forkserver gone takes every worker with it: one exit, not one per worker
            now = time.monotonic()
            exits.extend([now] * (1 if len(dead) > 1 and not forkserver_running() else len(dead)))
            while exits and now - exits[0] > RESTART_WINDOW_S:
                exits.popleft()
            if len(exits) > MAX_RESTARTS:
                raise FrugalError(f"workers exited {len(exits)} times within {RESTART_WINDOW_S:g} s (worker "
                                  f"{dead[0]}: status {processes[dead[0]].exitcode}); stopping. See the log above.")
            for index in dead:
                process = processes[index]
                logger.warning("worker %d (pid %d) exited with status %s; starting it again", index, process.pid,
                               process.exitcode)
                processes[index] = _start(spec(index), flavors)
                process.close()
    finally:
        _stop(processes)
        stop_forkserver()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        stop.set()
        listener.close()  # its daemon threads end with the process
        hub.stop()
        shutil.rmtree(folder, ignore_errors=True)
