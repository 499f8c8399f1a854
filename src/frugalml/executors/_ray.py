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

This module is the driver side. The rest, one job each: ``_ray_connect`` (reaching a
cluster), ``_ray_data`` (shipping datasets), ``_ray_channel`` (the channel),
``_ray_node`` (the task on the node), ``_ray_failures`` (why a Ray task died).

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
import time
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from frugalml.accounting import account
from frugalml.budgets import STUDY_METRICS
from frugalml.exceptions import ConfigError
from frugalml.executors._base import Executor, ExecutorSettings, StudyState
from frugalml.executors._gpu import warn_if_gpu_budget_unmeasurable
from frugalml.executors._local import PRELOAD
from frugalml.executors._ray_channel import SYNC_INTERVAL_S, Channel
from frugalml.executors._ray_connect import connect, import_ray
from frugalml.executors._ray_data import is_prepared, ship
from frugalml.executors._ray_failures import failed_record
from frugalml.executors._ray_node import run_on_node
from frugalml.executors._task import TrialTask
from frugalml.metrics import CPU_S
from frugalml.records import TrialRecord


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
        ray.get(self._channel.running_used.remote(CPU_S), timeout=120)
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
        return self.running_used(CPU_S)

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
            self._last_publish, tuple(PRELOAD),
        )
        self._running[ref] = _Submitted(task)

    def _kwargs_ref(self, kwargs: Mapping[str, Any]) -> Any:
        cached = self._kwargs.get(id(kwargs))
        if cached is None or cached[0] is not kwargs:
            shipped = {k: ship(v) if self.ship_data and is_prepared(v) else v for k, v in kwargs.items()}
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
            return failed_record(submitted.task, submitted.started, error, last)
        # the node knew peers only if a rule needed them: account again with the driver's
        return account(record, self.state.peers(record.workload), submitted.task.predicted_cpu_s_per_step)

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
        """Cancel every running trial (killing its Ray worker and the trial's processes), kill the
        channel actor, and close the Ray connection this executor made (one its caller made stays)."""
        ray = self._ray
        for ref in [*self._running, self._channel]:
            try:  # best effort: this runs while an interrupt or error propagates, or after the results are stored
                ray.kill(ref) if ref is self._channel else ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001
                pass
        self._running.clear()
        if self._started_ray:
            with contextlib.suppress(Exception):
                ray.shutdown()
