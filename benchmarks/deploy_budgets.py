"""Compute to the best shippable architecture: serving budgets screened before training, next to
training everything and measuring afterwards, and next to Optuna with the latency as a constraint.

One architecture grid on mnist_784 (an MLP grid, width x depth, and a CNN grid, channels x
depth), every configuration trained the same way (frugalml's built-in ``network_train``: Adam,
batch 64, ``--steps`` optimiser steps, one evaluation at the end, seed 0, the same split), under
two serving budgets, ``max_predict_ms`` (median single-row latency on one pinned core) and
``max_model_mb`` (the saved weights). Every latency and size is measured by the same probe
(``frugalml.deploy``: a fresh process pinned to the last core, the built-in architecture's
model). The arms, one after the other, each trial in one worker pinned to the first core:

* ``frugalml``: ``tune`` with the serving budgets and ``[deploy]``: each architecture is
  measured untrained, before it would train; one that breaks a budget is SKIPPED;
* ``exhaustive``: ``tune`` without them (every configuration trains), then each trained
  architecture measured with the same probe, the best feasible picked at the end;
* ``optuna-tpe``: Optuna's ``TPESampler`` over the same grid (a conditional space: family,
  then its architecture), as many trials as the grid has configurations; each trial trains
  its configuration (frugalml's worker and ``network_train``), measures it with the probe and
  reports ``trial.set_constraint`` (measured / limit - 1) for both budgets: c-TPE, as an
  Optuna user would write it (since Optuna 5.0 ``set_constraint`` is how a constraint reaches
  TPE; ``constraints_func`` is deprecated). A configuration sampled again is answered from a
  cache at no cost, which only helps Optuna.

CPU-seconds of an arm: the trial processes' own (``cpu_s`` of each record, read in the
worker) + every process this one waited for (the probes: ``getrusage(RUSAGE_CHILDREN)``) +
this process (the tuner, the watchdog, Optuna's sampler). "To best": for the two grid arms,
the whole run (a grid knows its best feasible configuration only when it is done); for Optuna,
up to the end of the trial that first trained the best feasible configuration (an oracle
stopping point, which favours Optuna). The best feasible configuration is the exhaustive arm's
(the truth); an arm that never trains it reaches it "never". Never shippable: trained
configurations whose exhaustive-arm measurement breaks a budget (one yardstick for all arms).

Printed: the grid with each architecture's measured latency, size and accuracy; per arm, the
configurations trained, those never shippable, the best accuracy, CPU-s to the best and in
all; ``ratio to best peer: R`` (frugalml's CPU-s to the best feasible configuration over the
best peer's; target <= 0.3).

    nice -n 19 python benchmarks/deploy_budgets.py [--quick] [--steps 150] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from frugalml import Search, Study, TrialStatus, Workload, tune
from frugalml.deploy import Deploy, ServingJudge, verdict
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
ARMS = ("frugalml", "exhaustive", "optuna-tpe")
PEERS = ARMS[1:]


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


@dataclass
class Trained:
    """One configuration an arm trained (or, for frugalml, skipped)."""

    key: str
    accuracy: float | None  # None: not trained
    trial_cpu_s: float
    predict_ms: float | None = None  # as this arm measured it
    model_mb: float | None = None
    feasible: bool = False  # as this arm saw it
    cpu_s_so_far: float = 0.0  # the arm's CPU-s when this result was known


@dataclass
class Arm:
    name: str
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
        feasible = [r for r in self.trained if r.feasible]
        return max(feasible, key=lambda r: r.accuracy) if feasible else None


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


def _study(name: str, family: str, grid: dict[str, list], directory: Path, steps: int, serving: bool) -> Study:
    return Study(
        name=name, directory=str(directory / name), mlflow_uri=None, seed=0, workers=1,
        workloads=[Workload(dataset=DATASET, algorithm=family, max_steps=steps, eval_every=steps,
                            params={"batch_size": BATCH_SIZE})],
        search=Search(method="grid", space=grid),
        budget=dict(BUDGET) if serving else {}, deploy=dict(DEPLOY) if serving else {},
        data_dir=os.environ.get("FRUGALML_DATA_DIR"),
    )


def _tune_grids(arm: Arm, grids: dict[str, dict[str, list]], directory: Path, steps: int, serving: bool,
                meter: Meter) -> None:
    def progress(event: str, record: Any) -> None:
        if event != "end":
            return
        family = record.workload.rsplit("-", 1)[-1]
        serving_cost = record.info.get("serving", {})
        trained = record.status is not TrialStatus.SKIPPED
        meter.add_trial(record.cpu_s)
        arm.results.append(Trained(
            arch_key(family, record.params), record.last("accuracy") if trained else None, record.cpu_s,
            serving_cost.get("predict_ms"), serving_cost.get("model_mb"),
            feasible=record.status is TrialStatus.COMPLETED, cpu_s_so_far=meter.now()))

    for family, grid in grids.items():
        tune(_study(f"deploy-{arm.name}-{family}", family, grid, directory, steps, serving), progress=progress)


def run_frugalml(grids: dict, data: Any, directory: Path, steps: int) -> Arm:
    arm, meter, started = Arm("frugalml"), Meter(), time.monotonic()
    _tune_grids(arm, grids, directory, steps, serving=True, meter=meter)
    return _closed(arm, meter, started)


def run_exhaustive(grids: dict, data: Any, directory: Path, steps: int) -> Arm:
    arm, meter, started = Arm("exhaustive"), Meter(), time.monotonic()
    _tune_grids(arm, grids, directory, steps, serving=False, meter=meter)
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


def run_optuna(grids: dict, data: Any, directory: Path, steps: int, seed: int) -> Arm:
    import optuna

    from frugalml.executors import LocalExecutor, TrialTask
    from frugalml.workloads import network_train

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    arm, meter, started = Arm("optuna-tpe"), Meter(), time.monotonic()
    judge = ServingJudge(BUDGET, Deploy(**DEPLOY))
    executor = LocalExecutor(1, sample_interval_s=0.1, pin=True)  # frugalml's worker: the same training
    seen: dict[str, tuple[float, tuple[float, float]]] = {}

    def objective(trial: optuna.Trial) -> float:
        family = trial.suggest_categorical("family", list(grids))
        params = {name: trial.suggest_categorical(f"{family}_{name}", values) for name, values in grids[family].items()}
        key = arch_key(family, params)
        if key not in seen:  # a configuration sampled again costs nothing: the user keeps a cache
            number = len(arm.results)
            executor.submit(TrialTask(
                trial_id=f"optuna/{number}/r0", number=number, workload=f"{DATASET}-{family}", config_id=str(number),
                repeat=0, params={**params, "batch_size": BATCH_SIZE}, train=network_train,
                train_kwargs=dict(data=data, algorithm=family, epochs=1, max_steps=steps, data_format="numpy", seed=0),
                eval_every=steps, steps_planned=steps))
            records: list = []
            while not records:
                records = executor.poll(1.0)
            record = records[0]
            meter.add_trial(record.cpu_s)
            cost = judge.screen(f"{DATASET}-{family}", family, params, data)  # measured after training
            accuracy = record.last("accuracy") if record.status is TrialStatus.COMPLETED else None
            violations = (cost["predict_ms"] / BUDGET["max_predict_ms"] - 1,  # <= 0: within the budget
                          cost["model_mb"] / BUDGET["max_model_mb"] - 1)
            arm.results.append(Trained(key, accuracy, record.cpu_s, cost["predict_ms"], cost["model_mb"],
                                       feasible=max(violations) <= 0, cpu_s_so_far=meter.now()))
            seen[key] = (accuracy if accuracy is not None else 0.0, violations)
        accuracy, violations = seen[key]
        trial.set_constraint("max_predict_ms", violations[0])
        trial.set_constraint("max_model_mb", violations[1])
        return accuracy

    try:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
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
    trained and judged feasible; None: never."""
    trials = 0.0
    for result in arm.results:
        trials += result.trial_cpu_s
        if result.key == key and result.accuracy is not None and result.feasible:
            if arm.name in ("frugalml", "exhaustive"):  # a grid knows its best when it is done
                return arm.cpu_s, arm.trial_cpu_s
            return result.cpu_s_so_far, trials
    return None


def _probe_cpu_s(arms: dict[str, Arm]) -> float:
    """The exhaustive arm's measuring CPU-s per architecture (its driver is otherwise idle then)."""
    return arms["exhaustive"].measure_probe_cpu_s / max(1, len(arms["exhaustive"].results))


def report(arms: dict[str, Arm], configs: list[tuple[str, dict]], steps: int, wall_s: float) -> dict[str, Any]:
    truth = {r.key: r for r in arms["exhaustive"].results}
    shippable = {key: r.feasible for key, r in truth.items()}
    best = arms["exhaustive"].best()
    unconstrained = max(arms["exhaustive"].trained, key=lambda r: r.accuracy)
    print(f"{len(configs)} architectures on {DATASET}, {steps} steps of batch {BATCH_SIZE} each; budget "
          f"max_predict_ms = {BUDGET['max_predict_ms']} (median of {DEPLOY['calls']} single-row calls, 1 pinned "
          f"core), max_model_mb = {BUDGET['max_model_mb']}")
    print(f"{'architecture':<18}{'predict ms':>11}{'model MB':>10}{'ships':>7}{'accuracy':>10}{'train CPU-s':>13}"
          f"{'frugalml':>10}{'optuna':>8}")
    trained_by = {name: {r.key for r in arm.trained} for name, arm in arms.items()}
    for family, params in configs:
        key = arch_key(family, params)
        r = truth[key]
        print(f"{key:<18}{r.predict_ms:>11.3f}{r.model_mb:>10.3f}{'yes' if r.feasible else 'no':>7}"
              f"{r.accuracy:>10.4f}{r.trial_cpu_s:>13.1f}"
              f"{'trained' if key in trained_by['frugalml'] else 'skipped':>10}"
              f"{'trained' if key in trained_by['optuna-tpe'] else '-':>8}")
    print(f"best feasible: {best.key} (accuracy {best.accuracy:.4f}); best with no budget: {unconstrained.key} "
          f"({unconstrained.accuracy:.4f})")
    print()
    print(f"{'arm':<12}{'trained':>8}{'never shippable':>17}{'best accuracy':>15}  {'best configuration':<18}"
          f"{'CPU-s to best':>14}{'CPU-s total':>13}{'trials':>9}{'measure+driver':>16}{'wall s':>8}")
    rows: dict[str, Any] = {}
    for name, arm in arms.items():
        own = arm.best()
        never = sum(1 for r in arm.trained if not shippable.get(r.key, True))
        reached = cpu_to(arm, best.key)
        to_best, trials_to_best = reached if reached else (None, None)
        rows[name] = {"trial_cpu_s_to_best": trials_to_best, "trained": len(arm.trained), "never_shippable": never,
                      "best": own.key if own else None, "best_accuracy": own.accuracy if own else None,
                      "cpu_s_to_best": to_best, "cpu_s_total": arm.cpu_s, "trial_cpu_s": arm.trial_cpu_s,
                      "measure_and_driver_cpu_s": arm.measure_and_driver_cpu_s, "wall_s": arm.wall_s,
                      "results": [asdict(r) for r in arm.results]}
        print(f"{name:<12}{len(arm.trained):>8}{never:>17}{own.accuracy if own else math.nan:>15.4f}  "
              f"{own.key if own else '-':<18}{'never' if to_best is None else f'{to_best:.1f}':>14}"
              f"{arm.cpu_s:>13.1f}{arm.trial_cpu_s:>9.1f}{arm.measure_and_driver_cpu_s:>16.1f}{arm.wall_s:>8.0f}")
    peers = {name: rows[name]["cpu_s_to_best"] for name in PEERS if rows[name]["cpu_s_to_best"] is not None}
    ours = rows["frugalml"]["cpu_s_to_best"]
    ratio = None
    if ours is not None and peers:
        peer = min(peers, key=peers.get)
        ratio = ours / peers[peer]
        print(f"ratio to best peer: {ratio:.2f} (frugalml {ours:.1f} CPU-s / {peer} {peers[peer]:.1f} CPU-s to "
              f"{best.key}; target <= 0.3: {'met' if ratio <= 0.3 else 'NOT met'})")
        mine, theirs = rows["frugalml"]["trial_cpu_s_to_best"], rows[peer]["trial_cpu_s_to_best"]
        print(f"  training alone (trial processes, no measuring, no driver): {mine / theirs:.2f} "
              f"({mine:.1f} / {theirs:.1f} CPU-s); measuring a trained model afterwards costs the peers "
              f"{_probe_cpu_s(arms):.1f} CPU-s an architecture (a fresh process importing torch); frugalml "
              f"measures its grid's untrained architectures in one probe that forks per architecture")
    else:
        print("ratio to best peer: n/a (frugalml never trained the best feasible configuration)"
              if ours is None else "ratio to best peer: n/a (no peer reached it)")
    print(f"never shippable, frugalml: {rows['frugalml']['never_shippable']} (target 0); whole benchmark "
          f"{wall_s:.0f} s wall")
    return {"steps": steps, "budget": BUDGET, "deploy": DEPLOY, "best": best.key, "ratio": ratio,
            "wall_s": wall_s, "arms": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="an 8-architecture smoke run (under 3 minutes)")
    parser.add_argument("--steps", type=int, help="optimiser steps per configuration (default 150; --quick 30)")
    parser.add_argument("--seed", type=int, default=0, help="Optuna's sampler seed")
    parser.add_argument("--data-dir", help="where mnist_784.npz is (default: FRUGALML_DATA_DIR)")
    parser.add_argument("--json", help="write every arm's trials and the summary here")
    args = parser.parse_args()
    if args.data_dir:
        os.environ["FRUGALML_DATA_DIR"] = args.data_dir
    grids = QUICK_GRIDS if args.quick else GRIDS
    steps = args.steps or (30 if args.quick else 150)
    configs = grid_configs(grids)
    started = time.monotonic()
    data = prepare_dataset(resolve_dataset(DATASET, data_dir=os.environ.get("FRUGALML_DATA_DIR")), seed=0)
    runs: dict[str, Callable[[Path], Arm]] = {
        "frugalml": lambda d: run_frugalml(grids, data, d, steps),
        "exhaustive": lambda d: run_exhaustive(grids, data, d, steps),
        "optuna-tpe": lambda d: run_optuna(grids, data, d, steps, args.seed),
    }
    arms = {}
    with tempfile.TemporaryDirectory(prefix="frugalml-deploy-bench-") as directory:
        for name in ARMS:
            arms[name] = runs[name](Path(directory))
    summary = report(arms, configs, steps, time.monotonic() - started)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
