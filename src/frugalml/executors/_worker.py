"""Entry point of a worker process: runs one trial and reports over a pipe."""

from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import sys
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any, Callable, Mapping

import psutil

from frugalml.executors._lifecycle import failed
from frugalml.executors._task import TrialTask, resolve_train_function
from frugalml.messages import Done, FirstStep, Message, WindowEnd
from frugalml.monitors import private_bytes
from frugalml.processes import PRELOAD_MODULE, die_with_parent
from frugalml.trial import Trial
from frugalml.units import to_mb

WARM_MODULE = "frugalml.executors._warm"  # the forkserver imports it last (see there)
BLAS_MODULE = "frugalml._blas_threads"  # and this one before numpy


def _pin(core: int | None, cpus: int) -> None:
    if core is not None and hasattr(os, "sched_setaffinity"):
        available = sorted(os.sched_getaffinity(0))
        chosen = {available[(core * cpus + i) % len(available)] for i in range(cpus)}
        os.sched_setaffinity(0, chosen)


def _limit_threads(cpus: int) -> None:
    """BLAS and OpenMP use ``cpus`` threads, through the forkserver's controller where it holds;
    processes the trial starts load OpenBLAS with as many, unless the user set that."""
    blas = sys.modules.get(BLAS_MODULE)
    if blas is not None and blas.DEFAULTED:
        os.environ["OPENBLAS_NUM_THREADS"] = str(cpus)
    warm = sys.modules.get(WARM_MODULE)  # absent where the workers are spawned, not forked
    controller = warm.controller() if warm is not None else None
    if controller is not None:
        controller.limit(limits=cpus)
    else:
        from threadpoolctl import threadpool_limits

        threadpool_limits(cpus)


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _with_own_memory(send: Callable[[Message], None]) -> Callable[[Message], None]:
    """Window messages carry this process's memory (~11 µs a window): the parent may read a short
    trial's windows only after the worker has exited, with no process left to sample. Window and
    first-step messages carry the CPU-seconds used so far (~2 µs), read here at the step boundary
    itself: the step boundaries saved compute is worked out from (:mod:`frugalml.accounting`)."""
    process = psutil.Process()

    def send_window(message: Message) -> None:
        if isinstance(message, WindowEnd):
            message = replace(message, own_memory_mb=to_mb(private_bytes(process.memory_info())), cpu_s=_cpu_seconds())
        elif isinstance(message, FirstStep):
            message = FirstStep(cpu_s=_cpu_seconds())
        send(message)

    return send_window


def _take_environment(environ: Mapping[str, str]) -> None:
    """The driver's environment as it is now. A forked worker inherits the forkserver's, which is
    the driver's when that started: a study (or several) ago, in a notebook or a test session.
    What the forkserver's preloaded libraries set when imported stays, unless the driver sets it:
    the worker would have set it by importing them itself."""
    for name in os.environ.keys() - environ.keys():
        del os.environ[name]
    os.environ.update(environ)
    preloaded = sys.modules.get(PRELOAD_MODULE)
    for name, value in getattr(preloaded, "ENVIRONMENT", {}).items():
        os.environ.setdefault(name, value)


def run_worker(
    task: TrialTask, connection: Connection, progress: Any, core: int | None, gpu_devices: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Run ``task`` in this process; every outcome ends with one final message."""
    die_with_parent(multiprocessing.parent_process().pid)  # the driver, not the forkserver
    if environ is not None:
        _take_environment(environ)
    if gpu_devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_devices  # before the training code loads CUDA
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    _pin(core, task.cpus)
    try:
        _limit_threads(task.cpus)
        train = resolve_train_function(task.train)
        trial = Trial(
            task.params, eval_every=task.eval_every, send=_with_own_memory(connection.send), progress=progress,
            steps_planned=task.steps_planned, artifact_dir=task.artifact_dir,
        )
        train(trial, **task.train_kwargs)
        trial._finish()
        connection.send(Done(steps=trial.steps, cpu_s=_cpu_seconds()))
    except BaseException as error:  # noqa: BLE001 - every failure must reach the parent
        connection.send(failed(error, cpu_s=_cpu_seconds()))
    finally:
        connection.close()
