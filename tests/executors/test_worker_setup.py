"""What a local worker costs around its trial: its thread limits set through the forkserver's
controller, and a driver that waits, not spins, while a worker that sent its last message exits."""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
import time
import uuid
from multiprocessing import util
from pathlib import Path

import psutil
import pytest

import frugalml.executors._local as local
from frugalml.processes import ORPHAN_GUARD_MODULE, PRELOAD_MODULE, forkserver_imports, use_forkserver
from frugalml.executors import LocalExecutor, TrialTask
from frugalml.executors._worker import WARM_MODULE
from frugalml.records import TrialStatus
from trainers import import_a_module_that_raises, import_torch, report_torch, reports_environment

LINGER_S = 0.8


def report_threads(trial) -> None:
    """One step; the BLAS and OpenMP thread limits this worker runs with, and whether it was forked
    from a forkserver that imported the warm module."""
    from threadpoolctl import threadpool_info

    trial.step(loss=1.0)
    trial.set_info(threads=sorted({(i["internal_api"], i["num_threads"]) for i in threadpool_info()}),
                   warm=sys.modules.get(WARM_MODULE) is not None, blas_env=os.environ.get("OPENBLAS_NUM_THREADS"),
                   frozen=gc.get_freeze_count())


def linger_after_the_last_message(trial) -> None:
    """One step, then the process takes LINGER_S to exit after closing its pipe (an exit finalizer)."""
    trial.step(loss=1.0)
    util.Finalize(None, time.sleep, args=(LINGER_S,), exitpriority=0)


def _importable_in_the_forkserver(monkeypatch) -> None:
    """The tests' own modules on the path of the next forkserver (CPython's does not take the
    driver's ``sys.path``, only its environment)."""
    tests = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])))


def run(train, cpus: int = 1, executor: LocalExecutor | None = None):
    executor = executor or LocalExecutor(1, pin=False)
    executor.submit(TrialTask(trial_id=f"t/{uuid.uuid4().hex[:6]}/r0", number=0, workload="t", config_id="c",
                              repeat=0, params={}, train=train, eval_every=1, cpus=cpus))
    finished = []
    while not finished:
        finished = executor.poll(1.0)
    return finished[0]


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(), reason="workers are spawned here")
def test_a_worker_runs_with_its_tasks_thread_limits_set_through_the_forkservers_controller():
    for cpus in (2, 1):  # the forkserver itself is not limited: each worker's limit is its own
        record = run(report_threads, cpus=cpus)
        assert record.status is TrialStatus.COMPLETED, record.error
        assert record.info["warm"] is True
        # OpenBLAS loaded with one thread in the forkserver (frugalml._blas_threads), its heap frozen; the
        # trial's own child processes would load it with the trial's cpus
        assert record.info["blas_env"] == (os.environ.get("OPENBLAS_NUM_THREADS") or str(cpus))  # the user's kept
        assert record.info["frozen"] > 0
        threads = [n for _, n in record.info["threads"]]
        assert threads and all(1 <= n <= cpus for n in threads), record.info["threads"]
        if cpus == 1:
            assert set(threads) == {1}
        elif len(os.sched_getaffinity(0)) >= cpus and any(api == "openblas" for api, _ in record.info["threads"]):
            assert ("openblas", cpus) in [tuple(t) for t in record.info["threads"]], record.info["threads"]  # raised


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(), reason="workers are spawned here")
def test_a_forkserver_made_for_a_server_is_replaced_before_a_trial_forks_from_it():
    """CPython keeps one forkserver a process: after ``serve --workers`` in a notebook (its forkserver
    imports the serving stack, not the trials' base set), a study's trial gets a forkserver of its own."""
    served = use_forkserver([ORPHAN_GUARD_MODULE, PRELOAD_MODULE], ["uvicorn"], ignore=(signal.SIGINT, signal.SIGTERM))
    served_imports = forkserver_imports()
    assert "uvicorn" in served_imports
    local.reset_preload()
    record = run(report_threads)
    assert record.status is TrialStatus.COMPLETED, record.error
    assert record.info["warm"] is True and record.info["blas_env"] is not None  # the trials' base set
    assert "uvicorn" not in forkserver_imports() and served.get_start_method() == "forkserver"


def test_the_driver_waits_on_the_exit_not_the_closed_pipe_of_a_worker_that_sent_its_last_message(monkeypatch):
    calls = []

    def counted_wait(objects, timeout=None):
        calls.append(timeout)
        return wait(objects, timeout)

    wait = local.wait
    monkeypatch.setattr(local, "wait", counted_wait)
    executor = LocalExecutor(1, pin=False, sample_interval_s=0.1)
    started = time.monotonic()
    record = run(linger_after_the_last_message, executor=executor)
    elapsed = time.monotonic() - started
    assert record.status is TrialStatus.COMPLETED, record.error
    assert elapsed >= LINGER_S
    # ~one wait per sample interval and message: a closed pipe left in the wait set returns at once, thousands of times
    assert len(calls) < 3 * elapsed / 0.1 + 20, len(calls)


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(), reason="workers are spawned here")
def test_each_study_gets_a_forkserver_that_imported_what_its_workers_need_and_no_more(tmp_path):
    """A worker's memory (RSS - shared) counts the pages it inherits: after a network study in the
    same process, a study of plain Python trials must not run in a forkserver holding torch (its
    trials were stopped over a memory budget they kept), nor scikit-learn, which only the built-in
    workloads use; the next network study gets torch back, and so does a user's function whose
    source imports torch."""
    from frugalml import Search, Study, Workload, tune

    def study(name, workload):
        return Study(name=name, workloads=[workload], search=Search(space={"width": [4]}), workers=1,
                     directory=str(tmp_path / name), mlflow_uri=None)

    network = Workload(dataset="diabetes", algorithm="mlp", max_steps=2, eval_every=2)
    assert tune(study("net", network)).records[0].status is TrialStatus.COMPLETED
    assert "torch" in forkserver_imports()
    plain = tune(study("plain", Workload(train=report_torch, name="plain"))).records[0]
    assert plain.status is TrialStatus.COMPLETED, plain.error
    assert plain.info["torch"] is False and "torch" not in forkserver_imports()
    assert "sklearn.linear_model" not in forkserver_imports()
    assert tune(study("net-again", network)).records[0].status is TrialStatus.COMPLETED
    assert "torch" in forkserver_imports()
    own = tune(study("own-torch", Workload(train=import_torch, name="own"))).records[0]
    assert own.status is TrialStatus.COMPLETED, own.error
    assert (own.info["torch"], own.info["sklearn"]) == (True, False)  # inherited from its forkserver; no scikit-learn


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(), reason="workers are spawned here")
def test_a_preloaded_module_that_raises_leaves_the_forkserver_up_and_its_error_to_the_trial(monkeypatch):
    _importable_in_the_forkserver(monkeypatch)
    local.reset_preload()
    local.preload("raises_at_import")  # a RuntimeError: CPython's forkserver itself survives only ImportError
    try:
        failed = run(import_a_module_that_raises)
        assert failed.status is TrialStatus.FAILED and "raised at import" in failed.error, failed.error
        assert "raises_at_import" in forkserver_imports() and run(report_threads).status is TrialStatus.COMPLETED
    finally:
        local.reset_preload()


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(), reason="workers are spawned here")
def test_what_a_preloaded_library_sets_in_the_environment_survives_and_so_does_a_forkserver_killed_midway(
        monkeypatch):
    """A worker takes the driver's environment of now, yet keeps what the forkserver's preloaded
    libraries set when imported (it would have set it importing them itself), unless the driver
    sets it. A forkserver that died is started again with the study's preload."""
    from multiprocessing import forkserver

    monkeypatch.delenv("FRUGALML_TEST_VALUE", raising=False)
    _importable_in_the_forkserver(monkeypatch)
    local.reset_preload()
    local.preload("sets_environment_at_import")  # sets FRUGALML_TEST_VALUE=7
    try:
        assert run(reports_environment).last("val_loss") == 7.0
        pid = forkserver._forkserver._forkserver_pid
        os.kill(pid, 9)
        deadline = time.monotonic() + 10  # dead, left for multiprocessing to reap
        while psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert run(reports_environment).last("val_loss") == 7.0  # imported again by the new forkserver
        monkeypatch.setenv("FRUGALML_TEST_VALUE", "3")
        assert run(reports_environment).last("val_loss") == 3.0  # the driver's own value wins
    finally:
        local.reset_preload()
