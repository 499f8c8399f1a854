"""The node side of the Ray executor: the Ray task that runs one trial under a local watchdog."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
import warnings
from dataclasses import replace
from typing import Any, Callable, Iterator, Mapping

from frugalml.budgets import STUDY_METRICS
from frugalml.executors._base import ExecutorSettings, StudyState
from frugalml.executors._local import LocalExecutor, preload, reset_preload
from frugalml.executors._ray_channel import SYNC_INTERVAL_S
from frugalml.executors._ray_connect import import_ray
from frugalml.executors._ray_data import localize
from frugalml.executors._task import TrialTask, resolve_train_function
from frugalml.records import TrialRecord


class _StudyFigures:
    """The node's copy of the channel's figures (a :class:`StudyState` its watchdog reads),
    refreshed without blocking the watchdog."""

    def __init__(self, channel: Any, trial_id: str) -> None:
        self.channel, self.trial_id = channel, trial_id
        self.state = StudyState()  # "finished": the rest of the study, running trials included
        self.version = -1
        self._pending: Any = None
        self._due = 0.0

    def fetch(self) -> None:
        """Wait for the figures once, before the trial starts: its first windows are checked
        against the peers the driver had when it submitted the trial, not against none."""
        start = {**dict.fromkeys(STUDY_METRICS, 0.0), "steps": 0}
        others, self.version, peers = import_ray().get(self.channel.exchange.remote(self.trial_id, start, self.version))
        self.state.replace(others, peers)

    def sync(self, executor: LocalExecutor) -> None:
        ray = import_ray()
        if self._pending is not None:
            ready, _ = ray.wait([self._pending], timeout=0)
            if not ready:
                return
            try:
                others, self.version, peers = ray.get(self._pending)
                self.state.replace(others, peers)
            except ray.exceptions.RayError:  # the driver is gone; its job ends this task soon
                pass
            self._pending = None
        if time.monotonic() >= self._due:
            steps = sum(executor.running_steps().values())  # one trial per node executor
            state = {**{m: executor.running_used(m) for m in STUDY_METRICS}, "steps": steps}
            self._pending = self.channel.exchange.remote(self.trial_id, state, self.version)
            self._due = time.monotonic() + SYNC_INTERVAL_S


def _call_with_env(env: Mapping[str, str], train: Callable[..., None], trial: Any, **kwargs: Any) -> None:
    """Run ``train`` with ``env`` set: the worker is forked from a server started by an
    earlier task, so it would otherwise see that task's GPUs, not this one's."""
    os.environ.update(env)
    resolve_train_function(train)(trial, **kwargs)


@contextlib.contextmanager
def _main_not_rerun() -> Iterator[None]:
    """Start worker processes without re-running the Ray worker's main script in them.

    multiprocessing re-runs ``__main__``'s file in each new process it starts, as
    ``__mp_main__``; in a Ray worker that is Ray's ``default_worker.py``, which imports Ray:
    ~0.5 s per trial to start, and more to exit. Trials need none of it.
    """
    main = sys.modules["__main__"]
    path = main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        if path is not None:
            main.__file__ = path


def run_on_node(task: TrialTask, train_kwargs: Mapping[str, Any], settings: ExecutorSettings,
                channel: Any, published: Any = None, modules: tuple[str, ...] = ()) -> TrialRecord:
    """The Ray task: run ``task`` in a watched worker process on this node. ``published``
    is the driver's latest publish to the channel: as an argument, Ray finishes it before
    the task starts, so the peers the task fetches first are the driver's. ``modules`` are
    what the driver's workers preload (torch for a built-in network): this Ray worker's
    forkserver imports them once, and the next trial Ray gives this worker forks from it."""
    ray = import_ray()
    node = {"ip": ray.util.get_node_ip_address(), "id": ray.get_runtime_context().get_node_id()}
    channel.started.remote(task.trial_id, node)
    kwargs = {name: localize(value) for name, value in train_kwargs.items()}
    train = task.train
    if "CUDA_VISIBLE_DEVICES" in os.environ:  # set by Ray for this task: its GPUs, or none
        train = functools.partial(_call_with_env, {"CUDA_VISIBLE_DEVICES": os.environ["CUDA_VISIBLE_DEVICES"]}, train)
    figures = _StudyFigures(channel, task.trial_id)
    figures.fetch()
    reset_preload()
    preload(*modules)
    with warnings.catch_warnings():  # a GPU budget no node can measure: the driver warned once already
        warnings.simplefilter("ignore")
        executor = LocalExecutor(replace(settings, workers=1, pin=False, gpus_per_trial=0.0), figures.state)
    with _main_not_rerun():
        executor.submit(replace(task, train=train, train_kwargs=kwargs, gpus=0.0))  # Ray chose the devices
    try:
        while not (finished := executor.poll(SYNC_INTERVAL_S)):
            figures.sync(executor)
    finally:
        executor.shutdown()
    record = finished[0]
    return replace(record, info={**record.info, "node": node})
