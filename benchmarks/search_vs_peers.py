"""Compute until the best feasible configuration is found: frugalml next to the strongest peers.

One workload (a built-in SGD model trained batch by batch, the same ``sgd_train`` loop in
every arm), one space, one memory budget, the same number of workers and trials, over
several seeds. With ``--space mlp``, the workload is frugalml's built-in network (algorithm
``mlp``, the same ``network_train`` loop in every arm: Adam, model seed 0, the study's split,
numpy data path, one intra-op thread per trial) over width (16..1024 log) x depth (1..4) x
learning rate (1e-4..0.1 log) x batch (16..4096 log), under two budgets: memory (480 MB) and
step time (60 ms: frugalml's ``max_mean_step_ms``, a window's mean step time as frugalml's
``Trial`` clock times it, evaluation excluded; every arm reads the same clock). The peers get
the step time the way a user would: a second constraint for Optuna (``set_constraint``
``max_mean_step_ms``, and the objective stops the trial at the first report over a budget,
telling the sampler its constraint values), a second condition in Ray's stopper. The arms:

* ``frugalml``: its defaults: TPE told the budget violations as constraints, trials
  stopped by the watchdog when they break the budget;
* ``frugalml+``: the same, plus successive halving among feasible trials (``[stopping]
  halving``), predicted budget stops (``[stopping] predicted``) and a screening sampler
  (``[prediction] screen``: the cost model rejects candidates that may break the budget);
* ``frugalml+gp`` (not run by default): ``[search] method = "gp"`` (Optuna's GPSampler) with
  predicted stops and screening; no halving (the GP learns nothing from halved trials) and
  no cost-aware sampling (frugalml refuses it with the GP). ``--ours frugalml+gp`` takes the
  ratio for it; ``--method`` sets the sampler of every other frugalml arm;
* ``optuna``: c-TPE: Optuna's ``TPESampler`` with ``MedianPruner`` and
  ``trial.set_constraint`` on the peak memory the objective measured (RSS - shared, psutil,
  at every report), two worker processes sharing a journal storage. Since Optuna 5.0,
  ``set_constraint`` is how a constraint reaches TPE (``constraints_func`` is deprecated);
* ``optuna-gp``: Optuna's ``GPSampler`` (constrained log EI), the same constraint, no pruner;
* ``ray``: Ray Tune (random search), ``ASHAScheduler`` on ``val_loss`` and a stopper on the
  memory each report carries: how a Ray user would do it;
* ``ray-optuna``: the same with ``OptunaSearch`` (TPE) behind a ``ConcurrencyLimiter``;
* ``random``: random search, every trial run in full (Optuna's ``RandomSampler``, no pruner);
* not run by default: ``optuna-ctpe`` (arm ``optuna`` written with the deprecated
  ``constraints_func``) and the ablation arms ``frugalml+-M``: ``frugalml+`` with one
  mechanism ``M`` off (``halving``, ``predicted``, ``screen``, ``cost``; ``--ablation`` runs
  ``frugalml+`` and all four). ``frugalml+nocost`` is the old name of ``frugalml+-cost``.

Syne Tune has no arm: its constrained searcher (``bayesopt_constrained``) is gone from
0.16.0, and the last release with it (0.14.2, ``[gpsearchers]``) would downgrade numpy,
pandas and scipy here (docs/search.md).

For each run: trials in the order they finished, each with its CPU-seconds (the worker's
own, measured in the trial), whether it broke the budget (one memory yardstick for every
arm, ``MemoryOracle``; on the MLP space fitted on the batch and the network's weights and
activations, and step time as each arm's own ``Trial`` clock measured it), and its final
``val_loss``. The target is the best feasible
``val_loss`` seen by any arm in any run (with ``--space grid`` and ``--exhaustive``, the
exhaustive grid's). Printed: per arm, medians over seeds of the best feasible loss,
over-budget trials and CPU-s; the quality ladder (``_quality_ladder``): per level (within
1%, 3%, 5% of the target), runs that reach it and median CPU-s to reach it, a run that
never does counting as never; ``ratio to best peer: R at within L``, ``frugalml+``'s median
over the best peer's at the tightest level most runs of both reach; and the anytime view,
the best feasible loss by fixed CPU budgets.

    python benchmarks/search_vs_peers.py [--dataset mnist_784 | --dataset PATH --target COL]
        [--space continuous|grid|mlp] [--seeds 3] [--first-seed 0] [--trials 30] [--steps 60]
        [--budget-mb 200] [--max-step-ms MS] [--arms frugalml,frugalml+,optuna,optuna-gp,ray,ray-optuna,random]
        [--levels 0.01,0.03,0.05] [--json out.json] [--target-value V]
    python benchmarks/search_vs_peers.py --rescore run1.json [run2.json ...] [--levels 0.01,0.03,0.05]
        [--rename OLD=NEW] [--ours ARM]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import psutil

from frugalml import Search, Study, Workload, tune
from frugalml.messages import WindowEnd
from frugalml.records import TrialStatus
from frugalml.trial import Trial
from frugalml.workloads import prepare_dataset, resolve_dataset, sgd_train
from frugalml.workloads import NETWORKS, network_features, network_train

from _quality_ladder import LEVELS, anytime_chart, anytime_info, format_anytime, format_ladder, ladder_info

MECHANISMS = ("halving", "predicted", "screen", "cost")  # what frugalml+ adds; an ablation arm drops one
ABLATION = tuple(f"frugalml+-{m}" for m in MECHANISMS)
ARMS = ("frugalml", "frugalml+", "optuna", "optuna-gp", "ray", "ray-optuna", "random", "optuna-ctpe",
        *ABLATION, "frugalml+nocost", "frugalml+gp")
DEFAULT_ARMS = ARMS[:7]
OURS = "frugalml+"  # the arm the ratio is taken for
PEERS = ("optuna", "optuna-gp", "ray", "ray-optuna", "random", "optuna-ctpe")  # every arm not frugalml's
GRID = {"batch_size": [30, 300, 3000, 30000], "learning_rate": [0.1, 0.01, 0.001, 0.0001]}
CONTINUOUS = {"batch_size": {"low": 16, "high": 32768, "log": True, "int": True},
              "learning_rate": {"low": 1e-5, "high": 1.0, "log": True},
              "alpha": {"low": 1e-6, "high": 1e-2, "log": True}}
#: the built-in MLP's space (``--space mlp``): architecture x optimiser; the wide, deep, large-batch
#: corner learns fastest per step and breaks the memory and step-time budgets
MLP = {"width": {"low": 16, "high": 1024, "log": True, "int": True},
       "depth": {"low": 1, "high": 4, "int": True},
       "learning_rate": {"low": 1e-4, "high": 1e-1, "log": True},
       "batch_size": {"low": 16, "high": 4096, "log": True, "int": True}}
SPACES = {"continuous": CONTINUOUS, "grid": GRID, "mlp": MLP}
MLP_BUDGET_MB, MLP_MAX_STEP_MS = 480.0, 60.0  # --space mlp's budgets (chosen to bind: docs/search.md)


@dataclass
class Finished:
    """One trial, as the benchmark scores it."""

    finished_s: float  # from the start of the run
    cpu_s: float
    val_loss: float | None  # final; None when it failed or broke the budget before reporting
    feasible: bool  # as the arm itself saw it
    over_budget: bool  # it ran and the arm saw its memory go over the budget
    batch_size: int = 0
    peak_mb: float | None = None  # the largest memory the arm measured
    measured_by_watchdog: bool = False  # frugalml's: sampled from the parent, transient peaks included
    params: dict | None = None  # the configuration (kept for the MLP space: the memory yardstick reads it)
    step_ms: float | None = None  # the largest window mean step time the arm measured (the same Trial timer)


@dataclass
class Workbench:
    """What every arm trains: the dataset, data path, steps and budget."""

    dataset: str
    path: str | None
    target: str | None
    algorithm: str
    data_format: str
    steps: int
    eval_every: int
    budget_mb: float
    max_step_ms: float | None = None  # the step-time budget (frugalml's ``max_mean_step_ms``); None: none

    def data(self):
        return prepare_dataset(resolve_dataset(self.dataset, path=self.path, target=self.target))

    def over(self, memory: float, step_ms: float | None) -> bool:
        """True when a window's memory or mean step time breaks a budget."""
        return memory > self.budget_mb or (self.max_step_ms is not None and step_ms is not None
                                           and step_ms > self.max_step_ms)

    def violations(self, peak: float, step_ms: float | None) -> tuple[float, ...]:
        """The constraint values an Optuna user writes: <= 0 within each budget."""
        memory = peak / self.budget_mb - 1.0
        if self.max_step_ms is None:
            return (memory,)
        return memory, (step_ms or 0.0) / self.max_step_ms - 1.0


def memory_mb() -> float:
    """RSS - shared of this process, the thesis's (and frugalml's) memory figure."""
    info = psutil.Process().memory_info()
    return (info.rss - getattr(info, "shared", 0)) / 2**20


class _Stop(Exception):
    pass


def train_plain(params: dict, data: Any, bench: Workbench,
                on_window: Callable[[int, float, float, float], bool]) -> None:
    """frugalml's own loop (``sgd_train``, or ``network_train`` for a built-in network), run
    outside frugalml: ``on_window(step, val_loss, memory_mb, mean_step_ms)`` is called at each
    evaluation and returns True to stop. ``mean_step_ms`` is the window's mean step time as
    frugalml's ``Trial`` times it (evaluation excluded): the figure its ``max_mean_step_ms`` reads."""

    def send(message: Any) -> None:
        if isinstance(message, WindowEnd) and "val_loss" in message.metrics:
            step_ms = 1000.0 * message.train_s / message.n_steps if message.n_steps else 0.0
            if on_window(message.step, message.metrics["val_loss"], memory_mb(), step_ms):
                raise _Stop

    trial = Trial(params, eval_every=bench.eval_every, send=send)
    try:
        if bench.algorithm in NETWORKS:  # the model seed (0) and split are the study's, as in frugalml's arms
            network_train(trial, data, algorithm=bench.algorithm, epochs=10_000, max_steps=bench.steps,
                          data_format=bench.data_format, seed=0)
        else:
            sgd_train(trial, data, algorithm=bench.algorithm, epochs=10_000, max_steps=bench.steps,
                      data_format=bench.data_format)
    except _Stop:
        pass


# -- frugalml -------------------------------------------------------------------------------


@dataclass
class Plus:
    """The settings of arm ``frugalml+``."""

    min_steps: int | None = None  # first rung; default: the first window
    reduction_factor: int = 3
    cost_aware: bool = True
    method: str = "tpe"  # the sampler of every frugalml arm (frugalml's [search] method)


PLUS = Plus()


def run_frugalml(bench: Workbench, space: dict, trials: int, seed: int, mechanisms: frozenset[str],
                 workers: int, method: str | None = None) -> list[Finished]:
    """A frugalml study with ``mechanisms`` (of :data:`MECHANISMS`) on: none is arm ``frugalml``."""
    stopping: dict[str, Any] = {}
    prediction: dict[str, Any] = {}
    if "halving" in mechanisms:
        stopping["halving"] = {"reduction_factor": PLUS.reduction_factor}
        if PLUS.min_steps is not None:
            stopping["halving"]["min_steps"] = PLUS.min_steps
    if "predicted" in mechanisms:
        stopping["predicted"] = True
    if mechanisms & {"predicted", "screen", "cost"}:  # the cost model they read
        prediction = {"screen": "screen" in mechanisms, "min_observations": 4}
    started = time.monotonic()
    done: list[Finished] = []

    def progress(event: str, record: Any) -> None:
        if event == "end":
            value = record.last("val_loss")
            rule = record.stop.rule if record.stop is not None else None
            broke = rule in ("max_memory_mb", "max_mean_step_ms")
            peaks = [v for v in (record.peak("memory_mb"), record.stop.value if rule == "max_memory_mb" else None)
                     if v is not None]
            steps = [v for v in (record.peak("mean_step_ms"), record.stop.value if rule == "max_mean_step_ms" else None)
                     if v is not None]
            done.append(Finished(time.monotonic() - started, record.cpu_s,
                                 value if value is not None and math.isfinite(value) else None,
                                 record.feasible and record.status is not TrialStatus.FAILED, broke,
                                 int(record.params["batch_size"]), max(peaks) if peaks else None,
                                 record.status is not TrialStatus.SKIPPED,
                                 dict(record.params),
                                 max(steps) if steps else None))

    with tempfile.TemporaryDirectory(prefix="frugalml-peers-") as directory:
        study = Study(
            # the study's seed splits the data and seeds the model, as bench.data() and sgd_train
            # do for the peers: 0 for every arm; only the search's seed varies
            name="search-vs-peers", directory=directory, workers=workers, mlflow_uri=None, seed=0,
            workloads=[Workload(dataset=None if bench.path else bench.dataset, path=bench.path, target=bench.target,
                                algorithm=bench.algorithm, data_format=bench.data_format, epochs=10_000,
                                max_steps=bench.steps, eval_every=bench.eval_every)],
            search=Search(method=method or PLUS.method, space=space, n_trials=trials, seed=seed, cost_aware="cost" in mechanisms),
            budget={"max_memory_mb": bench.budget_mb,
                    **({"max_mean_step_ms": bench.max_step_ms} if bench.max_step_ms is not None else {})},
            stopping=stopping, prediction=prediction,
        )
        tune(study, progress=progress)
    return done


# -- Optuna ---------------------------------------------------------------------------------


def _optuna_distributions(space: dict) -> dict:
    from frugalml.search import to_distributions

    return to_distributions(space)


def suggest(trial: Any, name: str, distribution: Any) -> Any:
    """``trial.suggest_*`` for an Optuna distribution, as an Optuna user writes it."""
    import optuna

    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, optuna.distributions.IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, log=distribution.log)
    return trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log)


def optuna_sampler_and_pruner(name: str, seed: int) -> tuple[Any, Any]:
    """The sampler and pruner of each Optuna arm, as its users write them.

    * ``tpe`` (arm ``optuna``): ``TPESampler`` + ``MedianPruner``; the objective calls
      ``trial.set_constraint``. Since Optuna 5.0 this *is* c-TPE (Watanabe & Hutter): TPE
      splits infeasible trials off by their constraint values, as ``constraints_func`` did;
    * ``ctpe`` (arm ``optuna-ctpe``): the same written the older way,
      ``TPESampler(constraints_func=...)`` reading a user attribute (deprecated in 5.0, still
      honoured; it writes the same constraint values), to check that the two agree;
    * ``gp`` (arm ``optuna-gp``): ``GPSampler`` (log EI times the probability of feasibility
      when the trials carry constraints), no pruner, as Optuna's GP examples run it;
    * ``random``: ``RandomSampler``, no pruner.
    """
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed), optuna.pruners.MedianPruner()
    if name == "ctpe":
        import warnings

        with warnings.catch_warnings():  # the deprecation notice: the point of this arm
            warnings.simplefilter("ignore", FutureWarning)
            sampler = optuna.samplers.TPESampler(
                seed=seed, constraints_func=lambda trial: tuple(trial.user_attrs.get("constraints", (0.0,))))
        return sampler, optuna.pruners.MedianPruner()
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False), optuna.pruners.NopPruner()
    return optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner()


def _optuna_worker(storage_path: str, study_name: str, bench: Workbench, space: dict, n_trials: int,
                   seed: int, sampler_name: str, out: Any, index: int) -> None:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(storage_path))
    worker_seed = seed * 100 + index  # each worker its own stream, the same every run
    sampler, pruner = optuna_sampler_and_pruner(sampler_name, worker_seed)
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
    data = bench.data()
    distributions = _optuna_distributions(space)
    started = out["started"]

    def objective(trial: optuna.Trial) -> float:
        params = {name: suggest(trial, name, d) for name, d in distributions.items()}
        cpu0, peak, slowest, last = time.process_time(), 0.0, 0.0, [math.nan]
        broke = False

        def on_window(step: int, val_loss: float, memory: float, step_ms: float) -> bool:
            nonlocal peak, slowest, broke
            peak, slowest, last[0] = max(peak, memory), max(slowest, step_ms), val_loss
            if bench.max_step_ms is not None and bench.over(memory, step_ms):
                # with a step-time budget (the MLP space) the user also stops a trial at the first
                # report that breaks a budget, as the Ray stopper does; it is told to the sampler
                # with its constraint values (complete, last loss), not pruned
                broke = True
                return True
            trial.report(val_loss, step)
            return trial.should_prune()

        try:
            train_plain(params, data, bench, on_window)
        finally:
            cpu = time.process_time() - cpu0
            trial.set_user_attr("cpu_s", cpu)
            trial.set_user_attr("peak_mb", peak)
            trial.set_user_attr("step_ms", slowest)
            violations = bench.violations(peak, slowest)
            names = ("max_memory_mb", "max_mean_step_ms")[:len(violations)]
            if sampler_name == "ctpe":  # the pre-5.0 spelling: the sampler reads it after the trial
                trial.set_user_attr("constraints", list(violations))
            else:
                for name, value in zip(names, violations):
                    trial.set_constraint(name, value)
            over = bench.over(peak, slowest)
            out["trials"].append(asdict(Finished(time.time() - started, cpu, last[0] if math.isfinite(last[0]) else None,
                                                 not over, over, int(params["batch_size"]), peak,
                                                 params=dict(params) if bench.algorithm in NETWORKS else None,
                                                 step_ms=slowest if bench.max_step_ms is not None else None)))
        if not broke and trial.should_prune():
            raise optuna.TrialPruned
        return last[0]

    study.optimize(objective, n_trials=n_trials, catch=(Exception,))


def run_optuna(bench: Workbench, space: dict, trials: int, seed: int, sampler: str, workers: int) -> list[Finished]:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    with tempfile.TemporaryDirectory(prefix="frugalml-peers-optuna-") as directory:
        path = str(Path(directory) / "journal.log")
        optuna.create_study(study_name="peers", storage=JournalStorage(JournalFileBackend(path)))
        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager:
            out = manager.dict(started=time.time(), trials=manager.list())
            share = [trials // workers + (i < trials % workers) for i in range(workers)]
            processes = [context.Process(target=_optuna_worker,
                                         args=(path, "peers", bench, space, n, seed, sampler, out, i))
                         for i, n in enumerate(share)]
            for p in processes:
                p.start()
            for p in processes:
                p.join()
            done = [Finished(**t) for t in out["trials"]]
    return sorted(done, key=lambda f: f.finished_s)


# -- Ray Tune -------------------------------------------------------------------------------


def _ray_space(space: dict) -> dict:
    from ray import tune as ray_tune

    converted = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            converted[name] = ray_tune.choice(spec)
        elif spec.get("int"):
            converted[name] = ray_tune.lograndint(spec["low"], spec["high"] + 1) if spec.get("log") \
                else ray_tune.randint(spec["low"], spec["high"] + 1)
        else:
            converted[name] = ray_tune.loguniform(spec["low"], spec["high"]) if spec.get("log") \
                else ray_tune.uniform(spec["low"], spec["high"])
    return converted


def ray_searcher(name: str, seed: int, workers: int) -> Any:
    """``random``: Ray's random search (arm ``ray``); ``optuna``: ``OptunaSearch`` (Optuna's TPE)
    behind a ``ConcurrencyLimiter`` (arm ``ray-optuna``), as Ray's documentation pairs a
    model-based searcher with ASHA. ``OptunaSearch`` has no channel for constraints: the memory
    stopper is the budget, and a stopped trial is told to Optuna as complete with its last loss."""
    if name == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(metric="val_loss", mode="min", seed=seed), max_concurrent=workers)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed, max_concurrent=workers)


def run_ray(bench: Workbench, space: dict, trials: int, seed: int, workers: int,
            searcher: str = "random") -> list[Finished]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import tune as ray_tune
    from ray.tune.schedulers import ASHAScheduler

    started = time.time()

    def trainable(config: dict) -> None:
        data = bench.data()
        cpu0 = time.process_time()

        def on_window(step: int, val_loss: float, memory: float, step_ms: float) -> bool:
            ray_tune.report({"val_loss": val_loss, "memory_mb": memory, "step_ms": step_ms,
                             "cpu_s": time.process_time() - cpu0, "finished_at": time.time(), "step": step})
            return False

        train_plain(dict(config), data, bench, on_window)

    # address="local": a fresh instance of our own, never a cluster another process left in /tmp/ray
    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        with tempfile.TemporaryDirectory(prefix="frugalml-peers-ray-") as directory:
            tuner = ray_tune.Tuner(
                trainable, param_space=_ray_space(space),
                tune_config=ray_tune.TuneConfig(
                    num_samples=trials,
                    scheduler=ASHAScheduler(metric="val_loss", mode="min", time_attr="step",
                                            max_t=bench.steps, grace_period=bench.eval_every, reduction_factor=3),
                    search_alg=ray_searcher(searcher, seed, workers),
                ),
                run_config=ray_tune.RunConfig(storage_path=directory, verbose=0,
                                              stop=lambda _, result: bench.over(result["memory_mb"],
                                                                                result.get("step_ms"))),
            )
            results = tuner.fit()
            done = []
            for result in results:
                frame = result.metrics_dataframe
                if frame is None or frame.empty:
                    done.append(Finished(time.time() - started, 0.0, None, False, False))
                    continue
                peak = float(frame["memory_mb"].max())
                slowest = float(frame["step_ms"].max()) if "step_ms" in frame else None
                over = bench.over(peak, slowest)
                last = frame.iloc[-1]
                done.append(Finished(float(last["finished_at"]) - started, float(last["cpu_s"]),
                                     float(last["val_loss"]), not over, over,
                                     int(result.config["batch_size"]), peak,
                                     params=dict(result.config) if bench.algorithm in NETWORKS else None,
                                     step_ms=slowest if bench.max_step_ms is not None else None))
    finally:
        ray.shutdown()
    return sorted(done, key=lambda f: f.finished_s)


def frugalml_mechanisms(arm: str) -> frozenset[str]:
    """What arm ``arm`` turns on: nothing for ``frugalml``; ``frugalml+`` all of :data:`MECHANISMS`
    (less cost-aware sampling with ``--no-cost-aware``); ``frugalml+-M`` all but ``M``."""
    if arm == "frugalml":
        return frozenset()
    if arm == "frugalml+gp":  # the GP ignores halved (pruned) trials, and frugalml refuses cost-aware GP search
        return frozenset({"predicted", "screen"})
    # frugalml refuses cost-aware GP search (a deferred candidate comes straight back)
    plus = frozenset(MECHANISMS) - (frozenset() if PLUS.cost_aware and PLUS.method != "gp" else {"cost"})
    off = {"frugalml+nocost": "cost"}.get(arm) or (arm.split("+-", 1)[1] if "+-" in arm else None)
    return plus - {off}


# -- scoring --------------------------------------------------------------------------------


def run_arm(arm: str, bench: Workbench, space: dict, trials: int, seed: int, workers: int) -> list[Finished]:
    if arm.startswith("frugalml"):
        return run_frugalml(bench, space, trials, seed, frugalml_mechanisms(arm), workers,
                            "gp" if arm == "frugalml+gp" else None)
    if arm == "optuna":
        return run_optuna(bench, space, trials, seed, "tpe", workers)
    if arm == "optuna-ctpe":
        return run_optuna(bench, space, trials, seed, "ctpe", workers)
    if arm == "optuna-gp":
        return run_optuna(bench, space, trials, seed, "gp", workers)
    if arm == "random":
        return run_optuna(bench, space, trials, seed, "random", workers)
    if arm == "ray-optuna":
        return run_ray(bench, space, trials, seed, workers, searcher="optuna")
    return run_ray(bench, space, trials, seed, workers)


class MemoryOracle:
    """One memory yardstick for every arm: peak memory as frugalml's watchdog measured it,
    fitted as linear in the batch size (on its trials that were not stopped on the way up).
    On the MLP space (trials that carry their ``params``), linear in the batch size and the
    network's cost features (``network_features``: weights with gradients and Adam's state,
    activations per batch), since a network's memory grows with its width and depth too.

    The peers measure memory where their users would, at each report, between batches,
    when a batch's copy is already freed: they miss the transient peak and believe
    over-budget configurations fit. Scored on their own figures they would "find" bests
    that do not fit; so every trial is judged by this one yardstick. (Step time needs no
    yardstick: every arm times its steps with the same ``Trial`` clock and is judged on it.)
    """

    def __init__(self, runs: dict[str, list[list[Finished]]], budget_mb: float,
                 features: Callable[[dict], dict] | None = None) -> None:
        import numpy as np

        trials = [f for per_seed in runs.values() for done in per_seed for f in done
                  if f.measured_by_watchdog and f.peak_mb is not None and not f.over_budget]
        self.budget_mb = budget_mb
        self.fit = None
        self.names: tuple[str, ...] = ("batch_size",)
        self.features = features if features is not None and all(f.params for f in trials) else None
        if self.features is not None:
            self.names = ("batch_size", "weights_mb", "activations_mb")
        rows = [self._row(f) for f in trials]
        if len({r[1] for r in rows}) >= 3 and len(rows) > 2 * len(self.names):
            X, y = np.array(rows), np.array([f.peak_mb for f in trials])
            coef = np.linalg.lstsq(X, y, rcond=None)[0]
            self.fit = tuple(float(c) for c in coef)
            self.error = float(np.median(np.abs(X @ coef - y)))
            self.points = len(rows)

    def _row(self, trial: Finished) -> list[float]:
        if self.features is None:
            return [1.0, float(trial.batch_size)]
        values = self.features(trial.params or {})
        return [1.0, *(float(values.get(name, 0.0)) for name in self.names)]

    def peak(self, trial: Finished) -> float | None:
        if trial.measured_by_watchdog:
            return trial.peak_mb
        if self.fit is None:
            return None
        return sum(c * x for c, x in zip(self.fit, self._row(trial)))

    def judge(self, trial: Finished) -> Finished:
        """``trial`` with ``feasible`` and ``over_budget`` as the yardstick sees them."""
        peak = self.peak(trial)
        if peak is None or trial.measured_by_watchdog:
            return trial
        over = peak > self.budget_mb
        return replace(trial, feasible=trial.feasible and not over, over_budget=trial.over_budget or over)

    def __str__(self) -> str:
        if self.fit is None:
            return "no memory yardstick (too few frugalml trials): peers judged on their own figures"
        if self.features is not None:
            a, b, w, act = self.fit
            return (f"memory yardstick: peak = {a:.0f} MB + {b * 1000:.2f} MB per 1000 rows of batch + "
                    f"{w:.2f} x weights_mb + {act:.2f} x activations_mb (fitted on {self.points} frugalml trials, "
                    f"median error {self.error:.1f} MB; budget {self.budget_mb:g} MB)")
        a, c = self.fit
        return (f"memory yardstick: peak = {a:.0f} MB + {c * 1000:.2f} MB per 1000 rows of batch "
                f"(over {self.budget_mb:g} MB above batch {((self.budget_mb - a) / c) if c > 0 else math.inf:.0f})")


def best_feasible(done: list[Finished]) -> float:
    values = [f.val_loss for f in done if f.feasible and f.val_loss is not None]
    return min(values) if values else math.inf


def exhaustive_optimum(bench: Workbench, space: dict, workers: int) -> float:
    """Every grid point trained in full by frugalml with no budget; the best whose peak (as
    the watchdog sampled it) fits the budget."""
    with tempfile.TemporaryDirectory(prefix="frugalml-peers-grid-") as directory:
        study = Study(
            name="exhaustive", directory=directory, workers=workers, mlflow_uri=None,
            workloads=[Workload(dataset=None if bench.path else bench.dataset, path=bench.path, target=bench.target,
                                algorithm=bench.algorithm, data_format=bench.data_format, epochs=10_000,
                                max_steps=bench.steps, eval_every=bench.eval_every)],
            search=Search(method="grid", space=space),
        )
        records = tune(study).records
    values = [r.last("val_loss") for r in records if (r.peak("memory_mb") or 0.0) <= bench.budget_mb]
    return min((v for v in values if v is not None and math.isfinite(v)), default=math.inf)


def report(runs: dict[str, list[list[Finished]]], target: float,
           levels: tuple[float, ...] = LEVELS) -> dict[str, Any]:
    """Print the cost table, the quality ladder and the anytime view; the summary for ``--json``."""
    summary: dict[str, Any] = {"target": target, "levels": list(levels), "arms": {}}
    print(f"\n{'arm':<19} {'runs':>5} {'best feasible':>14} {'over budget':>12} {'CPU-s total':>12}"
          "   (medians over runs; over budget as the memory yardstick judges it)")
    for arm, per_seed in runs.items():
        row = {
            "seeds": len(per_seed),
            "best_feasible": statistics.median(best_feasible(done) for done in per_seed),
            "over_budget": statistics.median(sum(f.over_budget for f in done) for done in per_seed),
            "over_budget_per_seed": [sum(f.over_budget for f in done) for done in per_seed],
            "cpu_s_total": statistics.median(sum(f.cpu_s for f in done) for done in per_seed),
        }
        summary["arms"][arm] = row
        print(f"{arm:<19} {row['seeds']:>5} {row['best_feasible']:>14.4f} {row['over_budget']:>12g} "
              f"{row['cpu_s_total']:>12.1f}")
    losses = [f.val_loss for per_seed in runs.values() for done in per_seed for f in done if f.val_loss is not None]
    if losses:  # does the budget bind? the best loss of any trial, over budget or not
        summary["unconstrained_best"] = min(losses)
        infeasible = sum(not f.feasible for per_seed in runs.values() for done in per_seed for f in done)
        total = sum(len(done) for per_seed in runs.values() for done in per_seed)
        print(f"\nbest val_loss of any trial, over budget or not: {min(losses):.5g} (target {target:.5g}); "
              f"{infeasible}/{total} trials infeasible by the yardsticks")
    peers = [a for a in runs if a in PEERS]
    info = ladder_info(runs, target, OURS, peers, levels)
    print()
    print("\n".join(format_ladder(info, OURS)))
    print()
    print("\n".join(format_anytime(anytime_info(runs), target)))
    for arm, rungs in info.arms.items():
        summary["arms"][arm]["ladder"] = {
            f"{r.level:g}": {"reached": r.reached, "runs": len(r.reaches),
                             "median_cpu_s": None if math.isinf(r.median_cpu_s) else r.median_cpu_s,
                             "per_seed_cpu_s": [None if math.isinf(x.cpu_s) else x.cpu_s for x in r.reaches]}
            for r in rungs}
    if info.headline is not None:
        summary["ratio_to_best_peer"] = {"value": info.headline.value, "level": info.headline.level,
                                         "best_peer": info.headline.best_peer}
    if OURS in runs and peers:
        ours = max(summary["arms"][OURS]["over_budget_per_seed"])
        fewest_peer = min(min(summary["arms"][p]["over_budget_per_seed"]) for p in peers)
        print(f"over budget: {OURS} at most {ours} per run, the peers at least {fewest_peer} "
              f"({'fewer than every peer in every run' if ours < fewest_peer else 'NOT fewer than every peer'})")
    return summary


def rescore(paths: list[str], levels: tuple[float, ...], target: float | None, out: str | None = None,
            rename: dict[str, str] | None = None, chart: tuple[str, str] | None = None) -> None:
    """Score stored runs again (``--json`` files, merged by arm, ``rename``\ d; the target is the
    best of their targets and of every feasible trial they hold); with ``out``, write the merged
    runs and the new summary there."""
    runs: dict[str, list[list[Finished]]] = {}
    targets = []
    for path in paths:
        stored = json.loads(Path(path).read_text())
        targets.append(stored["summary"]["target"])
        for arm, per_seed in stored["runs"].items():
            arm = (rename or {}).get(arm, arm)
            runs.setdefault(arm, []).extend([[Finished(**f) for f in done] for done in per_seed])
    targets.extend(best_feasible(done) for per_seed in runs.values() for done in per_seed)
    target = min(targets) if target is None else target
    summary = report(runs, target, levels)
    if chart is not None:
        anytime_chart(runs, target, chart[0], chart[1], OURS)
    if out:
        Path(out).write_text(json.dumps(
            {"args": {"rescore": paths, "levels": list(levels), "target_value": target}, "summary": summary,
             "runs": {arm: [[asdict(f) for f in done] for done in per_seed] for arm, per_seed in runs.items()}},
            indent=1, default=str))


def main() -> None:
    global OURS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist_784")
    parser.add_argument("--path", help="a CSV/parquet/npz file instead of a built-in dataset")
    parser.add_argument("--target", help="the target column of --path")
    parser.add_argument("--algorithm", default=None, help="default: svm; mlp with --space mlp")
    parser.add_argument("--data-format", default=None, choices=("numpy", "pandas"),
                        help="default: pandas; numpy with --space mlp (network_train's own default)")
    parser.add_argument("--space", default="continuous", choices=tuple(SPACES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=None, help="default: 16 (grid), 30 (continuous), 20 (mlp)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--budget-mb", type=float, default=None, help="default: 200; 480 with --space mlp")
    parser.add_argument("--max-step-ms", type=float, default=None,
                        help="a step-time budget (frugalml's max_mean_step_ms); default: none; 60 with --space mlp")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS))
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed+seeds-1")
    parser.add_argument("--exhaustive", action="store_true", help="with --space grid: target = the grid's optimum")
    parser.add_argument("--target-value", type=float, help="score against this val_loss (e.g. an earlier run's target)")
    parser.add_argument("--json", help="write the per-trial results and the summary here")
    parser.add_argument("--halving-min-steps", type=int, help="frugalml+: steps to the first rung (default: a window)")
    parser.add_argument("--reduction-factor", type=int, default=3, help="frugalml+: halving's eta")
    parser.add_argument("--no-cost-aware", action="store_true", help="frugalml+ without cost-aware sampling")
    parser.add_argument("--method", default="tpe", choices=("tpe", "gp", "random"),
                        help="the sampler of the frugalml arms ([search] method; gp: without cost-aware sampling)")
    parser.add_argument("--ablation", action="store_true",
                        help="arms frugalml+ and frugalml+-M for each mechanism M (overrides --arms)")
    parser.add_argument("--rescore", nargs="+", metavar="JSON", help="score earlier --json runs again (no runs)")
    parser.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                        help="with --rescore: call arm OLD of the stored runs NEW")
    parser.add_argument("--ours", default=OURS, help="the arm the ratio to the best peer is taken for")
    parser.add_argument("--chart", metavar="PNG", help="draw the anytime curve there (PNG or SVG)")
    parser.add_argument("--title", default="", help="the chart's title")
    parser.add_argument("--levels", "--tolerances", default="0.01,0.03,0.05",
                        help="the quality ladder: within these fractions of the best feasible loss")
    args = parser.parse_args()
    levels = tuple(float(t) for t in args.levels.split(","))
    OURS = args.ours
    if args.rescore:
        rescore(args.rescore, levels, args.target_value, args.json, dict(r.split("=", 1) for r in args.rename),
                (args.chart, args.title) if args.chart else None)
        return
    PLUS.min_steps, PLUS.reduction_factor, PLUS.cost_aware, PLUS.method = (
        args.halving_min_steps, args.reduction_factor, not args.no_cost_aware, args.method)
    arms = ["frugalml+", *ABLATION] if args.ablation else [a for a in args.arms.split(",") if a]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        parser.error(f"unknown arm(s) {unknown}; use {', '.join(ARMS)}")
    mlp = args.space == "mlp"
    args.algorithm = args.algorithm or ("mlp" if mlp else "svm")
    args.data_format = args.data_format or ("numpy" if mlp else "pandas")
    args.budget_mb = args.budget_mb if args.budget_mb is not None else (MLP_BUDGET_MB if mlp else 200.0)
    args.max_step_ms = args.max_step_ms if args.max_step_ms is not None else (MLP_MAX_STEP_MS if mlp else None)
    if args.algorithm in NETWORKS:
        # one intra-op thread per trial in every arm (frugalml's forked workers, Optuna's spawned
        # processes, Ray's actors): torch reads it at import, and step time depends on it
        os.environ["OMP_NUM_THREADS"] = "1"
    dataset = Path(args.path).stem.split(".")[0] if args.path else args.dataset
    bench = Workbench(dataset, args.path, args.target, args.algorithm, args.data_format, args.steps,
                      args.eval_every, args.budget_mb, args.max_step_ms)
    space = SPACES[args.space]
    trials = args.trials or {"grid": 16, "continuous": 30, "mlp": 20}[args.space]
    step_budget = f", step time {args.max_step_ms:g} ms" if args.max_step_ms is not None else ""
    print(f"{dataset} ({args.algorithm}, {args.data_format} path), {args.space} space, {trials} trials x "
          f"{args.seeds} seeds, {args.steps} steps, budget {args.budget_mb:g} MB{step_budget}, {args.workers} workers")
    runs: dict[str, list[list[Finished]]] = {arm: [] for arm in arms}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for arm in arms:  # arms alternate within a seed, so load drifts hit them alike
            t0 = time.monotonic()
            done = run_arm(arm, bench, space, trials, seed, args.workers)
            runs[arm].append(done)
            print(f"  seed {seed} {arm:<19} {len(done)} trials, {sum(f.cpu_s for f in done):7.1f} CPU-s, "
                  f"{time.monotonic() - t0:6.1f} s, best feasible {best_feasible(done):.5g}, "
                  f"{sum(f.over_budget for f in done)} over budget", flush=True)
    features = None
    if args.algorithm in NETWORKS:
        data = bench.data()
        features = network_features(args.algorithm, data.n_features, len(data.classes) if data.classes else 1)
    oracle = MemoryOracle(runs, bench.budget_mb, features)
    print(oracle)
    runs = {arm: [[oracle.judge(f) for f in done] for done in per_seed] for arm, per_seed in runs.items()}
    if args.target_value is not None:
        target = args.target_value
    elif args.exhaustive and args.space == "grid":
        target = exhaustive_optimum(bench, space, args.workers)
    else:
        target = min(best_feasible(done) for per_seed in runs.values() for done in per_seed)
    summary = report(runs, target, levels)
    if args.chart:
        anytime_chart(runs, target, args.chart, args.title, OURS)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"args": vars(args), "summary": summary,
             "runs": {arm: [[asdict(f) for f in done] for done in per_seed] for arm, per_seed in runs.items()}},
            indent=1, default=str))


if __name__ == "__main__":
    main()
