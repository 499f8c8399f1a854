"""Compute to the best shippable architecture: serving budgets screened before training, next to
training everything and measuring afterwards, and next to Optuna with the latency as a constraint.

One architecture grid on mnist_784 (an MLP grid, width x depth, and a CNN grid, channels x
depth), every configuration trained the same way (frugalml's built-in ``network_train``: Adam,
batch 64, ``--steps`` optimiser steps, seed 0, the same split), under two serving budgets,
``max_predict_ms`` (median single-row latency on one pinned core) and ``max_model_mb`` (the
saved weights). Every latency and size is measured by the same probe (``frugalml.deploy``: a
fresh process pinned to the last core, the built-in architecture's model). The arms, one
after the other, each trial in one worker pinned to the first core:

* ``frugalml``: ``tune`` with the serving budgets and ``[deploy]``: each architecture is
  measured untrained, before it would train; one that breaks a budget is SKIPPED; and
  successive halving among the ones that train (``[stopping] halving``, on ``accuracy``, a
  first rung at the first evaluation, ``--eval-every`` steps, keeping 1 in
  ``--reduction-factor``), so it evaluates every ``--eval-every`` steps: the evaluations
  before the last on the first ``--eval-rows`` test rows (``[[workloads]] eval_rows``), the
  last on all of them;
* ``frugalml-no-halving``: the same without halving, one evaluation at the end (the arm as it
  was before halving; ``--frugalml both|halving|no-halving`` picks which of the two run);
* ``exhaustive``: ``tune`` without them (every configuration trains, one evaluation at the
  end), then each trained architecture measured with the same probe, the best feasible
  picked at the end;
* ``optuna-tpe``: Optuna's ``TPESampler`` over the same grid (a conditional space: family,
  then its architecture), as many trials as the grid has configurations, once per seed of
  ``--optuna-seeds``; each trial trains its configuration (frugalml's worker and
  ``network_train``, one evaluation at the end), measures it with the probe and reports
  ``trial.set_constraint`` (measured / limit - 1) for both budgets: c-TPE, as an Optuna user
  would write it (since Optuna 5.0 ``set_constraint`` is how a constraint reaches TPE;
  ``constraints_func`` is deprecated). A configuration sampled again is answered from a
  cache at no cost, which only helps Optuna;
* ``optuna-tpe-pruned``: the same, plus the intermediate evaluations frugalml's halving gets
  (every ``--eval-every`` steps, on the same ``--eval-rows``), each ``trial.report``-ed to Optuna and followed by
  ``trial.should_prune()`` with Optuna's ``SuccessiveHalvingPruner`` (the same first rung and
  reduction factor as frugalml's halving, on the same accuracy); a pruned trial raises
  ``TrialPruned`` before it is measured, as in Optuna's examples (its worker is stopped when
  the pruner says so, by the same executor mechanism that stops frugalml's halved trials).

CPU-seconds of an arm: the trial processes' own (``cpu_s`` of each record, read in the
worker, a halved or pruned trial's up to its stop; less the probe's share a frugalml record
carries) + every process this one waited for (the
probes: ``getrusage(RUSAGE_CHILDREN)``) + this process (the tuner, the watchdog, Optuna's
sampler and pruner). "To best": for the two grid arms, the whole run (a grid knows its best
feasible configuration only when it is done); for Optuna, up to the end of the trial that
first trained the best feasible configuration to the end (an oracle stopping point, which
favours Optuna). The best feasible configuration is the exhaustive arm's (the truth); an arm
that never trains it reaches it "never". Optuna's arms run once per seed; a peer's figure is
the MEDIAN over its seeds of CPU-s to the best, a seed that never trained it counting as
never (+inf; a median that lands on never is never). Never shippable: trained configurations
(halved and pruned ones included) whose exhaustive-arm measurement breaks a budget (one
yardstick for all arms).

Printed: the grid with each architecture's measured latency, size and accuracy; per arm (and
Optuna seed), the configurations trained, those halved or pruned, those never shippable, the
best accuracy, CPU-s to the best and in all; each Optuna arm's per-seed CPU-s to best and
its median; ``ratio to best peer: R`` (frugalml's CPU-s to the best feasible configuration
over the best of all peers' figures; target <= 0.3).

    nice -n 19 python benchmarks/deploy_budgets.py [--quick] [--steps 150] [--optuna-seeds 0,1,2,3,4]
        [--eval-every 75] [--reduction-factor 2] [--eval-rows 2000] [--frugalml both] [--no-pruned-peer] [--json out.json]
    python benchmarks/deploy_budgets.py --from-json out.json [more.json]  # report saved arms again
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from frugalml import Search, Study, TrialStatus, Workload, tune
from frugalml.deploy import Deploy, ServingJudge, verdict
from frugalml.records import StopInfo, StopKind
from frugalml.stopping import StoppingRule
from frugalml.workloads import prepare_dataset, resolve_dataset

DATASET = "mnist_784"
BATCH_SIZE = 64
# Each limit sits near the geometric middle of the widest gap in the grid's measured figures
# (docs/deploy.md has them), so a noisy measurement on a shared machine does not move an
# architecture across it: 0.21 / 0.55 ms (cnn c64 d1 / d2), 1.6 / 2.6 MB (mlp w512 d1 / d2).
BUDGET = {"max_predict_ms": 0.35, "max_model_mb": 2.0}
DEPLOY = {"cores": 1, "quantile": 0.5, "calls": 200}  # the median: steady on a loaded 2-core box
GRIDS = {"mlp": {"width": [32, 128, 512, 2048], "depth": [1, 2, 3]},
         "cnn": {"channels": [4, 16, 64], "depth": [1, 2], "kernel": [3]}}
QUICK_GRIDS = {"mlp": {"width": [32, 512, 2048], "depth": [1, 2]},
               "cnn": {"channels": [4], "depth": [1, 2], "kernel": [3]}}
METRIC = "accuracy"  # what every arm maximises, halves and prunes on
FRUGALML, FRUGALML_FULL = "frugalml", "frugalml-no-halving"
EXHAUSTIVE, OPTUNA, OPTUNA_PRUNED = "exhaustive", "optuna-tpe", "optuna-tpe-pruned"
GROUPS = (FRUGALML, FRUGALML_FULL, EXHAUSTIVE, OPTUNA, OPTUNA_PRUNED)
OURS = GROUPS[:2]
PEERS = GROUPS[2:]
GRID_ARMS = (FRUGALML, FRUGALML_FULL, EXHAUSTIVE)  # a grid knows its best only when it is done


def process_cpu_s() -> float:
    """CPU-seconds of this process and of every child it has waited for (the probes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def arch_key(family: str, params: dict[str, Any]) -> str:
    """``mlp w512 d2`` / ``cnn c16 d3 k3``: a configuration's architecture, the same in every arm."""
    if family == "mlp":
        return f"mlp w{params['width']} d{params['depth']}"
    return f"cnn c{params['channels']} d{params['depth']} k{params['kernel']}"


def grid_configs(grids: dict[str, dict[str, list]]) -> list[tuple[str, dict[str, Any]]]:
    """Every (family, architecture) of the grids, in the order frugalml's grid search runs them."""
    configs = []
    for family, space in grids.items():
        names = list(space)

        def product(i: int, partial: dict[str, Any]) -> None:
            if i == len(names):
                configs.append((family, dict(partial)))
                return
            for value in space[names[i]]:
                product(i + 1, {**partial, names[i]: value})

        product(0, {})
    return configs


@dataclass(frozen=True)
class Schedule:
    """How a configuration trains: ``steps`` optimiser steps; the halving arms (frugalml's
    halving, the pruned Optuna peer) evaluate every ``eval_every`` steps and decide at rungs
    ``eval_every * reduction_factor**k``; the others evaluate once, at the end."""

    steps: int
    eval_every: int
    reduction_factor: int
    eval_rows: int | None = None  # the halving arms' evaluations before the last: this many test rows


@dataclass
class Trained:
    """One configuration an arm trained (or, for frugalml, skipped)."""

    key: str
    accuracy: float | None  # None: not trained; a halved or pruned trial's: its last evaluation
    trial_cpu_s: float
    predict_ms: float | None = None  # as this arm measured it
    model_mb: float | None = None
    feasible: bool = False  # as this arm saw it: trained to the end and within the budgets
    cpu_s_so_far: float = 0.0  # the arm's CPU-s when this result was known
    stopped: bool = False  # halved (frugalml) or pruned (Optuna) before the end
    steps: int | None = None  # steps it trained


@dataclass
class Arm:
    name: str  # "frugalml", "exhaustive", "optuna-tpe s1", ...
    group: str = ""  # FRUGALML, EXHAUSTIVE, OPTUNA or OPTUNA_PRUNED
    seed: int | None = None
    results: list[Trained] = field(default_factory=list)
    cpu_s: float = 0.0  # the whole arm
    trial_cpu_s: float = 0.0
    measure_and_driver_cpu_s: float = 0.0
    measure_probe_cpu_s: float = 0.0  # measuring after training, where an arm does it in one go
    wall_s: float = 0.0

    @property
    def trained(self) -> list[Trained]:
        return [r for r in self.results if r.accuracy is not None]

    def best(self) -> Trained | None:
        feasible = [r for r in self.trained if r.feasible and not r.stopped]
        return max(feasible, key=lambda r: r.accuracy) if feasible else None

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) if f.name != "results" else [asdict(r) for r in self.results]
                for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Arm:
        known = {f.name for f in fields(Trained)}
        results = [Trained(**{k: v for k, v in r.items() if k in known}) for r in data["results"]]
        return cls(**{**{k: v for k, v in data.items() if k in {f.name for f in fields(cls)}}, "results": results})


class Meter:
    """An arm's CPU-seconds so far: its trials' own plus this process's and its probes'."""

    def __init__(self) -> None:
        self.start, self.trials = process_cpu_s(), 0.0

    def add_trial(self, cpu_s: float) -> None:
        self.trials += cpu_s

    @property
    def driver(self) -> float:
        return process_cpu_s() - self.start

    def now(self) -> float:
        return self.trials + self.driver


def _study(name: str, family: str, grid: dict[str, list], directory: Path, schedule: Schedule,
           serving: bool, halving: bool) -> Study:
    eval_every = schedule.eval_every if halving else schedule.steps
    eval_rows = schedule.eval_rows if halving else None
    stopping = {"halving": {"min_steps": schedule.eval_every, "reduction_factor": schedule.reduction_factor,
                            "metric": METRIC}} if halving else {}
    return Study(
        name=name, directory=str(directory / name), mlflow_uri=None, seed=0, workers=1,
        workloads=[Workload(dataset=DATASET, algorithm=family, max_steps=schedule.steps, eval_every=eval_every,
                            eval_rows=eval_rows, params={"batch_size": BATCH_SIZE})],
        search=Search(method="grid", space=grid),
        budget=dict(BUDGET) if serving else {}, deploy=dict(DEPLOY) if serving else {}, stopping=stopping,
        data_dir=os.environ.get("FRUGALML_DATA_DIR"),
    )


def _tune_grids(arm: Arm, grids: dict[str, dict[str, list]], directory: Path, schedule: Schedule, serving: bool,
                meter: Meter, halving: bool = False) -> None:
    def progress(event: str, record: Any) -> None:
        if event != "end":
            return
        family = record.workload.rsplit("-", 1)[-1]
        serving_cost = record.info.get("serving", {})
        trained = record.status is not TrialStatus.SKIPPED
        # a record carries what measuring was charged to it (info["serving"]["cpu_s"], in its cpu_s),
        # and this process's children already count the probe: the trial's own CPU-s, up to a stop
        trial_cpu_s = record.cpu_s - float(serving_cost.get("cpu_s") or 0.0)
        meter.add_trial(trial_cpu_s)
        arm.results.append(Trained(
            arch_key(family, record.params), record.last(METRIC) if trained else None, trial_cpu_s,
            serving_cost.get("predict_ms"), serving_cost.get("model_mb"),
            feasible=record.status is TrialStatus.COMPLETED, cpu_s_so_far=meter.now(),
            stopped=record.status is TrialStatus.STOPPED, steps=record.steps_done if trained else 0))

    for family, grid in grids.items():
        tune(_study(f"deploy-{arm.name}-{family}", family, grid, directory, schedule, serving, halving),
             progress=progress)


def run_frugalml(grids: dict, data: Any, directory: Path, schedule: Schedule, halving: bool) -> Arm:
    name = FRUGALML if halving else FRUGALML_FULL
    arm, meter, started = Arm(name, name), Meter(), time.monotonic()
    _tune_grids(arm, grids, directory, schedule, serving=True, meter=meter, halving=halving)
    return _closed(arm, meter, started)


def run_exhaustive(grids: dict, data: Any, directory: Path, schedule: Schedule) -> Arm:
    arm, meter, started = Arm(EXHAUSTIVE, EXHAUSTIVE), Meter(), time.monotonic()
    _tune_grids(arm, grids, directory, schedule, serving=False, meter=meter)
    judge = ServingJudge(BUDGET, Deploy(**DEPLOY))
    measuring_from = process_cpu_s()
    for result in arm.results:  # then every trained model, measured with the same probe
        family, params = _parse_key(result.key)
        cost = judge.screen(f"{DATASET}-{family}", family, params, data)
        result.predict_ms, result.model_mb = cost["predict_ms"], cost["model_mb"]
        result.feasible = verdict(cost, BUDGET) is None
    arm.measure_probe_cpu_s = process_cpu_s() - measuring_from
    final = meter.now()
    for result in arm.results:  # the best is picked once everything is trained and measured
        result.cpu_s_so_far = final
    return _closed(arm, meter, started)


class _OptunaReporter(StoppingRule):
    """The pruned Optuna peer's loop: at each evaluation window, ``trial.report`` the accuracy
    and ask ``trial.should_prune()``, as a user's training loop would; the executor stops the
    worker when it says so (the same mechanism that stops frugalml's halved trials)."""

    name = "optuna-pruner"
    kind = StopKind.ML
    per_sample = False
    needs_peers = False

    def __init__(self) -> None:
        self.trial: Any = None
        self.reported: dict[int, float] = {}

    def start(self, trial: Any) -> None:
        self.trial, self.reported = trial, {}

    def check(self, view: Any) -> StopInfo | None:
        if self.trial is None:
            return None
        fresh = False
        for window in view.windows:
            value = window.values.get(METRIC)
            if value is not None and math.isfinite(value) and window.step not in self.reported:
                self.trial.report(float(value), window.step)
                self.reported[window.step] = float(value)
                fresh = True
        if fresh and self.trial.should_prune():
            step = max(self.reported)
            return self._stop(view, self.reported[step], 0.0,
                              f"pruned by Optuna's SuccessiveHalvingPruner at step {step}")
        return None


def run_optuna(grids: dict, data: Any, directory: Path, schedule: Schedule, seed: int, pruned: bool) -> Arm:
    import optuna

    from frugalml.executors import LocalExecutor, TrialTask, preload
    from frugalml.workloads import network_train

    # the worker's forkserver imports torch once, as frugalml's tuner has it do for a built-in
    # network (without it every Optuna trial would import torch itself, 2-5 CPU-s; no effect
    # where a frugalml arm already started the forkserver in this process)
    preload("torch", "torch._dynamo")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    group = OPTUNA_PRUNED if pruned else OPTUNA
    arm, meter, started = Arm(f"{group} s{seed}", group, seed), Meter(), time.monotonic()
    judge = ServingJudge(BUDGET, Deploy(**DEPLOY))
    reporter = _OptunaReporter()
    # frugalml's worker: the same training; the pruned peer's loop reports to Optuna at each window
    executor = LocalExecutor(1, sample_interval_s=0.1, pin=True, rules=[reporter] if pruned else [])
    eval_every = schedule.eval_every if pruned else schedule.steps
    # a configuration sampled again costs nothing: the user keeps a cache of its outcome
    seen: dict[str, tuple[float, tuple[float, float]] | dict[int, float]] = {}

    def objective(trial: optuna.Trial) -> float:
        family = trial.suggest_categorical("family", list(grids))
        params = {name: trial.suggest_categorical(f"{family}_{name}", values) for name, values in grids[family].items()}
        key = arch_key(family, params)
        if key not in seen:
            number = len(arm.results)
            reporter.start(trial)
            executor.submit(TrialTask(
                trial_id=f"optuna/{number}/r0", number=number, workload=f"{DATASET}-{family}", config_id=str(number),
                repeat=0, params={**params, "batch_size": BATCH_SIZE}, train=network_train,
                train_kwargs=dict(data=data, algorithm=family, epochs=1, max_steps=schedule.steps, data_format="numpy",
                                  seed=0, eval_rows=schedule.eval_rows if pruned else None),
                eval_every=eval_every, steps_planned=schedule.steps))
            records: list = []
            while not records:
                records = executor.poll(1.0)
            record = records[0]
            reporter.trial = None
            meter.add_trial(record.cpu_s)  # a pruned trial's own CPU-s, up to its stop
            if record.status is TrialStatus.STOPPED:  # pruned: raise TrialPruned, nothing measured
                arm.results.append(Trained(key, record.last(METRIC), record.cpu_s, cpu_s_so_far=meter.now(),
                                           stopped=True, steps=record.steps_done))
                seen[key] = dict(reporter.reported)
                raise optuna.TrialPruned()
            cost = judge.screen(f"{DATASET}-{family}", family, params, data)  # measured after training
            accuracy = record.last(METRIC) if record.status is TrialStatus.COMPLETED else None
            violations = (cost["predict_ms"] / BUDGET["max_predict_ms"] - 1,  # <= 0: within the budget
                          cost["model_mb"] / BUDGET["max_model_mb"] - 1)
            arm.results.append(Trained(key, accuracy, record.cpu_s, cost["predict_ms"], cost["model_mb"],
                                       feasible=max(violations) <= 0 and accuracy is not None,
                                       cpu_s_so_far=meter.now(), steps=record.steps_done))
            seen[key] = (accuracy if accuracy is not None else 0.0, violations)
        outcome = seen[key]
        if isinstance(outcome, dict):  # pruned before: the same reports, pruned again at no cost
            for step, value in sorted(outcome.items()):
                trial.report(value, step)
            raise optuna.TrialPruned()
        accuracy, violations = outcome
        trial.set_constraint("max_predict_ms", violations[0])
        trial.set_constraint("max_model_mb", violations[1])
        return accuracy

    try:
        pruner = (optuna.pruners.SuccessiveHalvingPruner(min_resource=schedule.eval_every,
                                                          reduction_factor=schedule.reduction_factor,
                                                          min_early_stopping_rate=0)
                  if pruned else optuna.pruners.NopPruner())
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)
        study.optimize(objective, n_trials=sum(1 for _ in grid_configs(grids)))
    finally:
        executor.shutdown()
    return _closed(arm, meter, started)


def _parse_key(key: str) -> tuple[str, dict[str, int]]:
    family, *parts = key.split()
    names = {"w": "width", "d": "depth", "c": "channels", "k": "kernel"}
    return family, {names[p[0]]: int(p[1:]) for p in parts}


def _closed(arm: Arm, meter: Meter, started: float) -> Arm:
    arm.cpu_s, arm.trial_cpu_s, arm.measure_and_driver_cpu_s = meter.now(), meter.trials, meter.driver
    arm.wall_s = time.monotonic() - started
    return arm


# -- scoring ---------------------------------------------------------------------------------


def cpu_to(arm: Arm, key: str | None) -> tuple[float, float] | None:
    """The arm's CPU-s, in all and in its trial processes alone, when it first had ``key``
    trained to the end and judged feasible; None: never."""
    trials = 0.0
    for result in arm.results:
        trials += result.trial_cpu_s
        if result.key == key and result.accuracy is not None and result.feasible and not result.stopped:
            if arm.group in GRID_ARMS:  # a grid knows its best when it is done
                return arm.cpu_s, arm.trial_cpu_s
            return result.cpu_s_so_far, trials
    return None


def _median(values: list[float | None]) -> float | None:
    """The median, never (None) counting as +inf; None when it lands on never."""
    if not values:
        return None
    median = statistics.median([math.inf if v is None else v for v in values])
    return None if math.isinf(median) else median


def _fmt(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def _probe_cpu_s(arms: dict[str, Arm]) -> float:
    """The exhaustive arm's measuring CPU-s per architecture (its driver is otherwise idle then)."""
    return arms[EXHAUSTIVE].measure_probe_cpu_s / max(1, len(arms[EXHAUSTIVE].results))


def report(arms: dict[str, Arm], configs: list[tuple[str, dict]], schedule: Schedule,
           wall_s: float | None) -> dict[str, Any]:
    truth = {r.key: r for r in arms[EXHAUSTIVE].results}
    shippable = {key: r.feasible for key, r in truth.items()}
    best = arms[EXHAUSTIVE].best()
    unconstrained = max(arms[EXHAUSTIVE].trained, key=lambda r: r.accuracy)
    by_group = {group: [arm for arm in arms.values() if arm.group == group] for group in GROUPS}
    ours = arms.get(FRUGALML) or arms[FRUGALML_FULL]
    print(f"{len(configs)} architectures on {DATASET}, {schedule.steps} steps of batch {BATCH_SIZE} each; budget "
          f"max_predict_ms = {BUDGET['max_predict_ms']} (median of {DEPLOY['calls']} single-row calls, 1 pinned "
          f"core), max_model_mb = {BUDGET['max_model_mb']}")
    print(f"evaluation on the test split: {FRUGALML_FULL}, {EXHAUSTIVE} and {OPTUNA} once, at the end; "
          f"{FRUGALML} (successive halving on {METRIC}, first rung {schedule.eval_every} steps, keep 1 in "
          f"{schedule.reduction_factor}) and {OPTUNA_PRUNED} (SuccessiveHalvingPruner, the same) every "
          f"{schedule.eval_every} steps" + (f", on the first {schedule.eval_rows} test rows before the last"
                                             if schedule.eval_rows else ""))
    seeds = {group: len(by_group[group]) for group in (OPTUNA, OPTUNA_PRUNED)}
    print(f"{'architecture':<18}{'predict ms':>11}{'model MB':>10}{'ships':>7}{'accuracy':>10}{'train CPU-s':>13}"
          f"{ours.name[:10]:>10}{'optuna':>8}{'pruned':>8}   (Optuna columns: seeds that trained it to the end "
          f"[+ pruned it])")
    for family, params in configs:
        key = arch_key(family, params)
        r = truth[key]
        mine = next((x for x in ours.results if x.key == key), None)
        state = "skipped" if mine is None or mine.accuracy is None else ("halved" if mine.stopped else "trained")

        def count(group: str) -> str:
            if not seeds[group]:
                return "-"
            full = sum(1 for arm in by_group[group] if any(x.key == key and not x.stopped for x in arm.trained))
            cut = sum(1 for arm in by_group[group] if any(x.key == key and x.stopped for x in arm.trained))
            return f"{full}/{seeds[group]}" + (f"+{cut}" if cut else "")

        print(f"{key:<18}{r.predict_ms:>11.3f}{r.model_mb:>10.3f}{'yes' if r.feasible else 'no':>7}"
              f"{r.accuracy:>10.4f}{r.trial_cpu_s:>13.1f}{state:>10}{count(OPTUNA):>8}{count(OPTUNA_PRUNED):>8}")
    print(f"best feasible: {best.key} (accuracy {best.accuracy:.4f}); best with no budget: {unconstrained.key} "
          f"({unconstrained.accuracy:.4f})")
    print()
    print(f"{'arm':<22}{'trained':>8}{'halved/pruned':>14}{'never shippable':>17}{'best accuracy':>15}  "
          f"{'best configuration':<18}{'CPU-s to best':>14}{'CPU-s total':>13}{'trials':>9}{'measure+driver':>16}"
          f"{'wall s':>8}")
    rows: dict[str, Any] = {}
    for name, arm in arms.items():
        own = arm.best()
        never = sum(1 for r in arm.trained if not shippable.get(r.key, True))
        stopped = sum(1 for r in arm.trained if r.stopped)
        reached = cpu_to(arm, best.key)
        to_best, trials_to_best = reached if reached else (None, None)
        rows[name] = {"group": arm.group, "seed": arm.seed, "trial_cpu_s_to_best": trials_to_best,
                      "trained": len(arm.trained), "halved_or_pruned": stopped, "never_shippable": never,
                      "best": own.key if own else None, "best_accuracy": own.accuracy if own else None,
                      "cpu_s_to_best": to_best, "cpu_s_total": arm.cpu_s, "trial_cpu_s": arm.trial_cpu_s,
                      "measure_and_driver_cpu_s": arm.measure_and_driver_cpu_s, "wall_s": arm.wall_s}
        print(f"{name:<22}{len(arm.trained):>8}{stopped:>14}{never:>17}{own.accuracy if own else math.nan:>15.4f}  "
              f"{own.key if own else '-':<18}{_fmt(to_best):>14}"
              f"{arm.cpu_s:>13.1f}{arm.trial_cpu_s:>9.1f}{arm.measure_and_driver_cpu_s:>16.1f}{arm.wall_s:>8.0f}")
    print()
    # a peer's figure: the exhaustive arm's, or the median over an Optuna arm's seeds (never = +inf)
    peers: dict[str, dict[str, Any]] = {}
    for group in PEERS:
        members = [rows[arm.name] for arm in by_group[group]]
        if not members:
            continue
        to_best = _median([m["cpu_s_to_best"] for m in members])
        trials = _median([m["trial_cpu_s_to_best"] for m in members])
        peers[group] = {"cpu_s_to_best": to_best, "trial_cpu_s_to_best": trials, "seeds": len(members),
                        "reached": sum(1 for m in members if m["cpu_s_to_best"] is not None)}
        if group in (OPTUNA, OPTUNA_PRUNED):
            per_seed = ", ".join(f"s{m['seed']} {_fmt(m['cpu_s_to_best'])}" for m in members)
            print(f"{group}: CPU-s to {best.key} by seed: {per_seed}; median over {len(members)} seeds (a seed that "
                  f"never trained it counts as never): {_fmt(to_best)}; "
                  f"never shippable trained: {', '.join(str(m['never_shippable']) for m in members)}")
    reached = {group: p["cpu_s_to_best"] for group, p in peers.items() if p["cpu_s_to_best"] is not None}
    ratios: dict[str, float | None] = {}
    for name in (n for n in OURS if n in arms):
        label = "" if name == FRUGALML else f" ({name})"
        mine = rows[name]["cpu_s_to_best"]
        ratio = ratios[name] = None
        if mine is not None and reached:
            peer = min(reached, key=reached.get)
            ratio = ratios[name] = mine / reached[peer]
            what = "" if peer == EXHAUSTIVE else " median"
            print(f"ratio to best peer{label}: {ratio:.2f} ({name} {mine:.1f} CPU-s / {peer}{what} "
                  f"{reached[peer]:.1f} CPU-s to {best.key}; best of {', '.join(peers)}; target <= 0.3: "
                  f"{'met' if ratio <= 0.3 else 'NOT met'})")
            ours_trials, theirs = rows[name]["trial_cpu_s_to_best"], peers[peer]["trial_cpu_s_to_best"]
            if theirs:
                print(f"  training alone (trial processes, no measuring, no driver): {ours_trials / theirs:.2f} "
                      f"({ours_trials:.1f} / {theirs:.1f} CPU-s); measuring a trained model afterwards costs the "
                      f"peers {_probe_cpu_s(arms):.1f} CPU-s an architecture (a fresh process importing torch); "
                      f"frugalml measures its grid's untrained architectures in one probe that forks per architecture")
        else:
            print(f"ratio to best peer{label}: n/a ({name} never trained the best feasible configuration)"
                  if mine is None else f"ratio to best peer{label}: n/a (no peer reached it)")
    for name in (n for n in OURS if n in arms):
        label = "frugalml" if name == FRUGALML else name
        print(f"never shippable, {label}: {rows[name]['never_shippable']} (target 0)")
    if wall_s is not None:
        print(f"whole benchmark {wall_s:.0f} s wall")
    return {"steps": schedule.steps, "schedule": asdict(schedule), "budget": BUDGET, "deploy": DEPLOY,
            "best": best.key, "ratio": ratios.get(FRUGALML), "ratios": ratios,
            "aggregate": "median over Optuna seeds, never = +inf",
            "peers": peers, "wall_s": wall_s, "arms": rows,
            "raw": {name: arm.to_json() for name, arm in arms.items()},
            "configs": [[family, params] for family, params in configs]}


def _save(path: str | None, arms: dict[str, Arm], configs: list, schedule: Schedule) -> None:
    """A checkpoint after each arm: the raw arms, so ``--from-json`` can report what finished."""
    if path:
        Path(path).write_text(json.dumps({"schedule": asdict(schedule), "configs": [[f, p] for f, p in configs],
                                          "raw": {name: arm.to_json() for name, arm in arms.items()}}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="an 8-architecture smoke run (a few minutes)")
    parser.add_argument("--steps", type=int, help="optimiser steps per configuration (default 150; --quick 30)")
    parser.add_argument("--optuna-seeds", default="0,1,2,3,4", help="Optuna's sampler seeds, comma-separated")
    parser.add_argument("--seed", type=int, help="one Optuna seed (the same as --optuna-seeds N)")
    parser.add_argument("--eval-every", type=int,
                        help="the halving arms' evaluation window and first rung (default steps / 2)")
    parser.add_argument("--reduction-factor", type=int, default=2, help="halving's and the pruner's eta")
    parser.add_argument("--eval-rows", type=int, default=2000,
                        help="the halving arms' evaluations before the last use this many test rows (0: all)")
    parser.add_argument("--frugalml", choices=("both", "halving", "no-halving"), default="both",
                        help=f"frugalml's arms: {FRUGALML} (with halving), {FRUGALML_FULL} (one evaluation at the end)")
    parser.add_argument("--no-pruned-peer", action="store_true", help="leave out the optuna-tpe-pruned peer")
    parser.add_argument("--pruned-seeds", help="the pruned peer's seeds (default: --optuna-seeds)")
    parser.add_argument("--arms", default=",".join(GROUPS),
                        help="run only these arms (comma-separated groups); reports need exhaustive, else only "
                             "--json is written, to merge with --from-json")
    parser.add_argument("--data-dir", help="where mnist_784.npz is (default: FRUGALML_DATA_DIR)")
    parser.add_argument("--json", help="write every arm's trials and the summary here (also after each arm)")
    parser.add_argument("--from-json", nargs="+", help="report the arms saved in these files (later ones win)")
    args = parser.parse_args()
    if args.data_dir:
        os.environ["FRUGALML_DATA_DIR"] = args.data_dir
    if args.from_json:
        saved = [json.loads(Path(p).read_text()) for p in args.from_json]
        schedule = Schedule(**{k: v for k, v in saved[0]["schedule"].items() if k in {f.name for f in fields(Schedule)}})
        configs = [(f, p) for f, p in saved[0]["configs"]]
        arms = {name: Arm.from_json(raw) for data in saved for name, raw in data["raw"].items()}
        order = {group: i for i, group in enumerate(GROUPS)}
        arms = dict(sorted(arms.items(), key=lambda kv: (order[kv[1].group], kv[1].seed or 0)))
        summary = report(arms, configs, schedule, None)
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=1))
        return
    grids = QUICK_GRIDS if args.quick else GRIDS
    steps = args.steps or (30 if args.quick else 150)
    schedule = Schedule(steps, args.eval_every or steps // 2, args.reduction_factor, args.eval_rows or None)
    seeds = [args.seed] if args.seed is not None else [int(s) for s in args.optuna_seeds.split(",") if s.strip()]
    pruned_seeds = [int(s) for s in args.pruned_seeds.split(",") if s.strip()] if args.pruned_seeds else seeds
    wanted = {a.strip() for a in args.arms.split(",") if a.strip()}
    if args.no_pruned_peer:
        wanted.discard(OPTUNA_PRUNED)
    if args.frugalml == "halving":
        wanted.discard(FRUGALML_FULL)
    elif args.frugalml == "no-halving":
        wanted.discard(FRUGALML)
    if wanted - set(GROUPS):
        parser.error(f"unknown arms {sorted(wanted - set(GROUPS))}; known: {', '.join(GROUPS)}")
    configs = grid_configs(grids)
    started = time.monotonic()
    data = prepare_dataset(resolve_dataset(DATASET, data_dir=os.environ.get("FRUGALML_DATA_DIR")), seed=0)
    arms: dict[str, Arm] = {}
    with tempfile.TemporaryDirectory(prefix="frugalml-deploy-bench-") as directory:
        runs = [lambda h=h: run_frugalml(grids, data, Path(directory), schedule, h)
                for h, group in ((True, FRUGALML), (False, FRUGALML_FULL)) if group in wanted]
        runs += [lambda: run_exhaustive(grids, data, Path(directory), schedule)] if EXHAUSTIVE in wanted else []
        runs += [lambda s=s: run_optuna(grids, data, Path(directory), schedule, s, pruned=False)
                 for s in (seeds if OPTUNA in wanted else [])]
        runs += [lambda s=s: run_optuna(grids, data, Path(directory), schedule, s, pruned=True)
                 for s in (pruned_seeds if OPTUNA_PRUNED in wanted else [])]
        for run in runs:
            arm = run()
            arms[arm.name] = arm
            print(f"[{time.monotonic() - started:.0f} s] {arm.name}: {arm.cpu_s:.1f} CPU-s, {arm.wall_s:.0f} s wall",
                  flush=True)
            _save(args.json, arms, configs, schedule)
    print()
    if EXHAUSTIVE not in arms or not any(name in arms for name in OURS):
        print(f"no report without {EXHAUSTIVE} and a frugalml arm: merge with --from-json")
        return
    summary = report(arms, configs, schedule, time.monotonic() - started)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
