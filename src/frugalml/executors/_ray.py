"""Ray executor: each trial runs as a Ray task, watched on its node by a ``LocalExecutor(1)``.

The task reserves ``task.cpus`` CPUs (and ``gpus_per_trial`` GPUs) and runs the trial
exactly as the local backend does: in a child worker process sampled by a parent-side
watchdog, now on the node itself. So memory (RSS - shared of the trial's process
tree), kill-mid-step budgets, stop latency, hang detection and failure reasons are the
same on a remote node as on a laptop, and a finished trial comes back to the driver as
one :class:`~frugalml.records.TrialRecord`; nothing is streamed per step.

What a node cannot know alone, the driver publishes through one small actor (the
channel): the CPU-seconds the rest of the study used (for the study compute budget)
and the finished peers of each workload (for median stopping). Each task exchanges
its own CPU-seconds for those figures every ``SYNC_INTERVAL_S`` without blocking its
watchdog, which also lets the driver record how far a trial got if its Ray worker
dies.

Why plain Ray tasks rather than Ray Tune's ``Tuner``: frugalml's own tuner already
owns the search (ask-and-tell samplers, repeats, resume from its results store), so a
Tune experiment would duplicate that bookkeeping with a second results directory and
a second resume path; Tune stoppers act on reported results only, while the watchdog
here stops a trial in the middle of a step; and Tune costs about 1 s per trial where a
reused Ray worker costs milliseconds. Ray Tune users get
:mod:`frugalml.integrations.ray_tune` instead.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from frugalml.accounting import account
from frugalml.budgets import STUDY_METRICS
from frugalml.exceptions import ConfigError
from frugalml.executors._base import Executor, ExecutorSettings, StudyState
from frugalml.executors._gpu import warn_if_gpu_budget_unmeasurable
from frugalml.executors._lifecycle import TrialLifecycle
from frugalml.executors._local import LocalExecutor
from frugalml.executors._task import TrialTask, resolve_train_function
from frugalml.files import cache_root
from frugalml.records import TrialRecord
from frugalml.trial import PROGRESS_SIZE

SYNC_INTERVAL_S = 0.5  # how often a running trial and the driver exchange study figures
_INSTALL = "pip install 'frugalml[ray]'"


def import_ray() -> Any:
    """``ray``, or a one-line :class:`ConfigError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"The Ray backend needs Ray; install it with: {_INSTALL}") from None
    return ray


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


def _check_reachable(address: str) -> None:
    """Fail fast on an unreachable ``host:port``: ``ray.init`` would retry for a minute."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        if address in ("auto", "local"):
            return
        raise ConfigError(f"Ray address must look like 'HOST:PORT' (or 'auto'). Got {address!r} instead.")
    why = _grpc_answer(host.strip("[]"), int(port))
    if why is not None:
        raise ConfigError(
            f"Cannot reach a Ray cluster at {address!r} ({why}); start one with `ray start --head` or fix --address."
        )


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + an empty SETTINGS frame


def _grpc_answer(host: str, port: int, timeout_s: float = 5.0) -> str | None:
    """Why ``host:port`` is not a gRPC server (Ray's GCS and Ray Client are), or None.

    A gRPC server answers the HTTP/2 preface with a SETTINGS frame at once; a port that
    accepts and never answers (a firewall, a stopped process) or speaks another protocol
    (the dashboard's HTTP port) would keep ``ray.init`` retrying for minutes.
    """
    tls = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")  # then only the connection is checked
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as connection:
            if tls:
                return None
            connection.settimeout(timeout_s)
            connection.sendall(_HTTP2_PREFACE)
            header = connection.recv(9)
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as error:
        return error.strerror or str(error)
    if len(header) >= 4 and header[3] == 4:  # frame type 4: SETTINGS
        return None
    if not header:
        return "it closed the connection"
    return "it answers, but not as a Ray cluster: the dashboard's port? use the one `ray start --head` printed"


def connect(address: str | None, num_cpus: int, runtime_env: Mapping[str, Any] | None = None) -> bool:
    """Connect to the cluster at ``address``, or start a local Ray with ``num_cpus`` CPUs.

    An already initialised Ray is reused as it is. Returns True when this call
    initialised Ray.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    options: dict[str, Any] = dict(log_to_driver=False, logging_level=logging.WARNING)
    if runtime_env:
        options["runtime_env"] = dict(runtime_env)
    if address is None:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **options)
        return True
    _check_reachable(address)
    try:
        ray.init(address=address, **options)
    except Exception as error:  # noqa: BLE001 - ray.init raises many kinds; each means a bad address or set-up
        causes = f"{error} {error.__cause__}"
        hint = (
            "the cluster uses token authentication: set RAY_AUTH_MODE=token (and RAY_AUTH_TOKEN)"
            if "Authentication" in causes or "AuthToken" in causes
            else "check --address (see `ray status` on the head node)"
        )
        raise ConfigError(f"Cannot connect to the Ray cluster at {address!r}: {_first_line(error)}; {hint}.") from None
    return True


# -- the dataset, put into the object store once ------------------------------------------


@dataclass(frozen=True)
class ShippedData:
    """A prepared dataset plus an object-store copy for nodes that lack its directory."""

    data: Any  # frugalml.workloads.PreparedData
    arrays: Any  # ObjectRef of {file name: ndarray or bytes}


def ship(data: Any) -> ShippedData:
    """Put the files of a :class:`~frugalml.workloads.PreparedData` into the object store."""
    ray = import_ray()
    from frugalml.workloads._prepare import ARRAY_NAMES  # lazy: scikit-learn; only built-in data is shipped

    files: dict[str, Any] = dict(zip((f"{n}.npy" for n in ARRAY_NAMES), data.arrays(mmap=True)))
    files["meta.json"] = (data.directory / "meta.json").read_bytes()
    return ShippedData(data, ray.put(files))


def localize(value: Any) -> Any:
    """On a node: the dataset itself when its directory exists here (a shared or same
    file system), else a copy written once per node from the object store into the
    node's frugalml cache, written to a temporary folder and renamed into place."""
    if not isinstance(value, ShippedData):
        return value
    if (Path(value.data.directory) / "meta.json").is_file():
        return value.data
    import numpy as np

    from frugalml.workloads import PreparedData  # lazy: scikit-learn, on a node that needs the data

    target = cache_root() / "prepared" / Path(value.data.directory).name
    if not (target / "meta.json").is_file():
        files = import_ray().get(value.arrays)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            if isinstance(content, bytes):
                (tmp / name).write_bytes(content)
            else:
                np.save(tmp / name, content)
        try:
            os.rename(tmp, target)
        except OSError:  # another trial on this node wrote it first
            shutil.rmtree(tmp, ignore_errors=True)
    return PreparedData.load(target)


def _is_prepared(value: Any) -> bool:
    workloads = sys.modules.get("frugalml.workloads")  # loaded by the tuner for built-in workloads
    return workloads is not None and isinstance(value, workloads.PreparedData)


# -- the node side -------------------------------------------------------------------------


class Channel:
    """Study figures shared by the driver and the nodes (a Ray actor, no CPU reserved)."""

    def __init__(self) -> None:
        self.finished = dict.fromkeys(STUDY_METRICS, 0.0)
        self.peers: dict[str, list[TrialRecord]] = {}
        self.version = 0
        self.running: dict[str, dict[str, Any]] = {}
        self.forgotten: set[str] = set()  # a late message from an ended trial must not revive it

    def publish(self, finished: Mapping[str, float], peers: Mapping[str, list[TrialRecord]]) -> None:
        self.finished = dict(finished)
        if peers:
            self.peers.update(peers)
            self.version += 1

    def started(self, trial_id: str, node: dict[str, str]) -> None:
        if trial_id not in self.forgotten:
            self.running.setdefault(trial_id, {})["node"] = node

    def exchange(self, trial_id: str, state: dict[str, Any], version: int) -> tuple[dict[str, float], int, dict | None]:
        """Store a trial's progress; return what the rest of the study used (finished trials
        and the other running ones: CPU-seconds, joules) and, if newer, the peers."""
        if trial_id not in self.forgotten:
            self.running.setdefault(trial_id, {}).update(state)
        others = [s for t, s in self.running.items() if t != trial_id]
        used = {m: self.finished.get(m, 0.0) + sum(s.get(m, 0.0) for s in others) for m in STUDY_METRICS}
        return used, self.version, (self.peers if version != self.version else None)

    def running_used(self, metric: str) -> float:
        return sum(s.get(metric, 0.0) for s in self.running.values())

    def forget(self, trial_id: str) -> dict[str, Any]:
        """Drop a finished trial; returns what it last said (node, steps, CPU-seconds, joules)."""
        self.forgotten.add(trial_id)
        return self.running.pop(trial_id, {})


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
                channel: Any, published: Any = None) -> TrialRecord:
    """The Ray task: run ``task`` in a watched worker process on this node. ``published``
    is the driver's latest publish to the channel: as an argument, Ray finishes it before
    the task starts, so the peers the task fetches first are the driver's."""
    ray = import_ray()
    node = {"ip": ray.util.get_node_ip_address(), "id": ray.get_runtime_context().get_node_id()}
    channel.started.remote(task.trial_id, node)
    kwargs = {name: localize(value) for name, value in train_kwargs.items()}
    train = task.train
    if "CUDA_VISIBLE_DEVICES" in os.environ:  # set by Ray for this task: its GPUs, or none
        train = functools.partial(_call_with_env, {"CUDA_VISIBLE_DEVICES": os.environ["CUDA_VISIBLE_DEVICES"]}, train)
    figures = _StudyFigures(channel, task.trial_id)
    figures.fetch()
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


# -- the driver side -----------------------------------------------------------------------


@dataclass
class _Submitted:
    task: TrialTask
    started: float = field(default_factory=time.monotonic)


class RayExecutor(Executor):
    """Runs trials on a Ray cluster, under the same :class:`Executor` contract as :class:`LocalExecutor`.

    Each trial is a Ray task reserving ``task.cpus`` CPUs and ``gpus_per_trial``
    GPUs; at most ``workers`` run at once (more queue in Ray when the cluster is
    full). Records have the same shape as local ones, plus ``info["node"]``
    (``{"ip": ..., "id": ...}``) naming the node that ran the trial.

    Args:
        settings: an :class:`ExecutorSettings` (or ``workers`` and its fields as
            keywords). ``workers`` is also the CPUs of a local Ray started when
            ``address`` is None; rules run on the node; ``pin`` is ignored (Ray's CPU
            counts are logical; each worker still limits its BLAS threads to
            ``task.cpus``); ``gpus_per_trial`` GPUs are reserved per trial.
        state: the study's finished trials, published to the nodes.
        address: a running cluster's ``HOST:PORT`` (or ``"auto"``); None starts a
            local Ray. An already initialised Ray is used as it is.
        ship_data: put prepared datasets into the object store for nodes without
            their files; None does so when the cluster spans more than one host.
        runtime_env: a Ray runtime environment, used when this executor starts Ray.

    Example:
        >>> executor = RayExecutor(2, rules=[MemoryBudget(400)])   # doctest: +SKIP
        >>> executor.submit(task); executor.poll(1.0)              # doctest: +SKIP
    """

    def __init__(
        self,
        settings: ExecutorSettings | int = 1,
        state: StudyState | None = None,
        *,
        address: str | None = None,
        ship_data: bool | None = None,
        runtime_env: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(ExecutorSettings.coerce(settings, options), state)
        self.address = address
        gpus_per_trial = self.gpus_per_trial = self.settings.gpus_per_trial
        self._needs_peers = any(rule.needs_peers for rule in self.settings.rules)  # else peers stay on the driver
        self._started_ray = connect(address, self.workers, runtime_env)
        ray = self._ray = import_ray()
        self._check_gpus(gpus_per_trial)
        warn_if_gpu_budget_unmeasurable(self.settings.rules, self._why_no_gpu)
        self.ship_data = self._spans_hosts() if ship_data is None else ship_data
        here = ray.get_runtime_context().get_node_id()
        affinity = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(here, soft=True)
        self._channel = ray.remote(num_cpus=0, scheduling_strategy=affinity)(Channel).remote()
        # Wait for it: calls a Ray worker makes to an actor still starting die with that worker,
        # and the driver needs them to tell how far a trial got when its worker is killed.
        ray.get(self._channel.running_used.remote("cpu_s"), timeout=120)
        self._remote = ray.remote(max_retries=0)(run_on_node)
        self._last_publish: Any = None
        self._running: dict[Any, _Submitted] = {}
        self._kwargs: dict[int, tuple[Mapping[str, Any], Any]] = {}
        self._published: tuple[dict[str, float], dict[str, int]] = ({}, {})
        self._last_running = dict.fromkeys(STUDY_METRICS, 0.0)

    def _check_gpus(self, gpus_per_trial: float) -> None:
        """Fail now, not with trials pending forever, when no node can give a trial its GPUs."""
        if gpus_per_trial <= 0:
            return
        most = max((node.get("Resources", {}).get("GPU", 0.0) for node in self._ray.nodes() if node["Alive"]), default=0.0)
        if most < gpus_per_trial:
            if self._started_ray:
                self._ray.shutdown()
            raise ConfigError(
                f"gpus_per_trial = {gpus_per_trial:g} but no node of the Ray cluster has that many GPUs "
                f"(most on one node: {most:g}); lower [execution] gpus_per_trial or add GPU nodes."
            )

    def _why_no_gpu(self) -> str | None:
        if any(node["Alive"] and node.get("Resources", {}).get("GPU", 0.0) > 0 for node in self._ray.nodes()):
            return None
        return "no node of the Ray cluster has a GPU"

    def _spans_hosts(self) -> bool:
        here = self._ray.util.get_node_ip_address()
        return any(node["Alive"] and node["NodeManagerAddress"] != here for node in self._ray.nodes())

    @property
    def running(self) -> list[TrialTask]:
        return [s.task for s in self._running.values()]

    def running_cpu_s(self) -> float:
        return self.running_used("cpu_s")

    def running_used(self, metric: str) -> float:
        """What the running trials used so far (CPU-seconds, joules), as their nodes last said."""
        if not self._running or metric not in STUDY_METRICS:
            return 0.0
        try:
            self._last_running[metric] = self._ray.get(self._channel.running_used.remote(metric), timeout=10)
        except self._ray.exceptions.RayError:
            pass
        return self._last_running[metric]

    def submit(self, task: TrialTask) -> None:
        """Start ``task`` on the cluster; its data goes to the object store once per workload."""
        self._check_slot()
        self._publish(task.workload)  # the channel has every finished peer before the task asks
        options: dict[str, Any] = {"num_cpus": task.cpus, "name": f"frugalml-trial-{task.number}"}
        gpus = task.gpus or self.gpus_per_trial
        if gpus:
            options["num_gpus"] = gpus
        ref = self._remote.options(**options).remote(
            replace(task, train_kwargs={}), self._kwargs_ref(task.train_kwargs), self.settings, self._channel,
            self._last_publish,
        )
        self._running[ref] = _Submitted(task)

    def _kwargs_ref(self, kwargs: Mapping[str, Any]) -> Any:
        cached = self._kwargs.get(id(kwargs))
        if cached is None or cached[0] is not kwargs:
            shipped = {k: ship(v) if self.ship_data and _is_prepared(v) else v for k, v in kwargs.items()}
            cached = (kwargs, self._ray.put(shipped))
            self._kwargs[id(kwargs)] = cached
        return cached[1]

    def poll(self, timeout: float | None = None) -> list[TrialRecord]:
        """Wait up to ``timeout`` seconds for trials to end; return those that did."""
        timeout = SYNC_INTERVAL_S if timeout is None else timeout
        self._publish()
        if not self._running:
            time.sleep(timeout)
            return []
        ray = self._ray
        refs = list(self._running)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        return [self._collect(ref) for ref in ready]

    def _collect(self, ref: Any) -> TrialRecord:
        submitted = self._running.pop(ref)
        ray = self._ray
        last: dict[str, Any] = {}
        try:
            last = ray.get(self._channel.forget.remote(submitted.task.trial_id), timeout=10)
        except ray.exceptions.RayError:
            pass
        try:
            record = ray.get(ref)
        except ray.exceptions.RayError as error:
            return self._failed(submitted, error, last)
        # the node knew peers only if a rule needed them: account again with the driver's
        return account(record, self.state.peers(record.workload), submitted.task.predicted_cpu_s_per_step)

    def _failed(self, submitted: _Submitted, error: BaseException, last: Mapping[str, Any]) -> TrialRecord:
        """The record of a trial whose Ray task died: its steps and windows stayed on the node."""
        trial = TrialLifecycle(submitted.task, [0.0] * PROGRESS_SIZE, submitted.started)
        info: dict[str, Any] = {}
        trial.failure = self._why_failed(error, info)
        if "node" in last:
            info["node"] = last["node"]
        if last.get("energy_j"):  # what its node last said: the study's joules keep counting it
            info["energy_j"] = float(last["energy_j"])
        return trial.record(steps_done=int(last.get("steps", 0)), cpu_s=float(last.get("cpu_s", 0.0)), info=info)

    def _why_failed(self, error: BaseException, info: dict[str, Any]) -> str:
        """What killed a trial's Ray task, in one line (``info`` gets ``ray_error`` and, for an
        import error, ``user_error``)."""
        ray = self._ray
        info["ray_error"] = type(error).__name__
        cause = getattr(error, "cause", None)
        if isinstance(error, ray.exceptions.RayTaskError) and isinstance(cause, ImportError):
            message = (
                f"cannot load the trial on its Ray node: {_first_line(cause)}; install the training code "
                "on every node (or pass a runtime_env)"
            )
            info["user_error"] = True
        elif isinstance(error, ray.exceptions.OutOfMemoryError):
            message = f"Ray's memory monitor killed the worker: {_first_line(error)}"
        elif isinstance(error, ray.exceptions.WorkerCrashedError):
            message = "Ray worker died during the trial (killed, or its node ran out of memory)"
        elif isinstance(error, ray.exceptions.NodeDiedError):
            message = f"Ray node died during the trial: {_first_line(error)}"
        elif isinstance(error, ray.exceptions.TaskCancelledError):
            message = "Ray task cancelled"
        else:
            message = f"Ray task failed: {_first_line(cause or error)}"
        return message

    def _publish(self, starting: str | None = None) -> None:
        """Send the channel what changed: finished CPU-seconds and joules and, if rules need them, the
        peers of the running workloads (and of ``starting``, a trial's about to be submitted)."""
        workloads = {s.task.workload for s in self._running.values()} | ({starting} if starting else set())
        if not workloads:
            return
        finished = self.state.totals()
        published, counts = self._published
        peers: dict[str, list[TrialRecord]] = {}
        if self._needs_peers:
            for workload in workloads:
                records = self.state.peers(workload)
                if len(records) != counts.get(workload):
                    counts[workload] = len(records)
                    peers[workload] = [replace(r, train_loss=()) for r in records]  # rules read windows only
        if peers or finished != published:
            self._last_publish = self._channel.publish.remote(finished, peers)
            self._published = (finished, counts)

    def shutdown(self) -> None:
        """Cancel every running trial (killing its Ray worker and the trial's processes)."""
        ray = self._ray
        for ref in [*self._running, self._channel]:
            try:  # best effort: this runs while an interrupt or error propagates
                ray.kill(ref) if ref is self._channel else ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001
                pass
        self._running.clear()
        if self._started_ray:
            ray.shutdown()
