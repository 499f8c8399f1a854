"""Predictive stopping and skipping vs. the exhaustive thesis grid, side by side in one run.

The thesis grid (batch {30, 300, 3000, 30000} x learning rate {0.1, 0.01, 0.001,
0.0001}) on mnist_784 with logistic regression, step-capped so it runs in minutes on
two cores. The data is a pandas frame sliced per batch (as ``fetch_openml`` returns
it), so a large batch really costs memory.

1. **exhaustive**: every configuration in full, no budget enforced. Which
   configurations meet a budget is read off what they measured (peak memory, the
   slowest window's mean step time, the trial's wall time).
2. per budget scenario (memory, step time, and trial time):
   * **hard**: the budget enforced by the hard rules only (for reference);
   * **predictive**: hard rules + the ``predicted`` in-trial rule + skipping
     configurations the cost model puts over budget.

Printed per scenario: CPU-seconds and their ratio to the exhaustive grid (target
<= 50 %), whether the best feasible configuration is the exhaustive grid's (or within
1 % of its test loss), and false stops/skips: trials stopped or skipped by prediction
that met the budget in the exhaustive run.

Budgets default to the geometric midpoint, as measured by the exhaustive run, between
two neighbouring batch sizes (memory and trial time: 3000 | 30000; step time: 300 |
3000), so each scenario has a clear boundary (printed); pass ``--memory-mb`` /
``--step-ms`` / ``--trial-s`` to fix them. Wall-clock budgets (step time, trial time)
depend on the machine's load, which changes between the runs: on a shared machine a
configuration near the boundary can meet a budget in one run and break it in the next.

``--search`` adds the closed loop with the search, replayed on the exhaustive run's
measured costs (no new trials, so it can use many seeds): TPE on a continuous
batch-size x learning-rate space under the memory budget, plain (a budget-stopped
trial is told as pruned) vs. with the budget constraints vs. constraints + skipping,
and the share of budget-breaking proposals (and of those that ran) in the first and
second half of each study.

Usage::

    python benchmarks/predictive_savings.py                 # ~5 minutes on 2 busy cores
    python benchmarks/predictive_savings.py --search        # + the TPE comparison
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

from frugalml import Search, Study, TrialRecord, TrialStatus, Workload, tune
from frugalml.results import best_feasible, mechanism

BATCHES = (30, 300, 3000, 30000)
RATES = (0.1, 0.01, 0.001, 0.0001)
PREDICTION = {"confidence": 0.9, "min_observations": 4}
PREDICTED_RULE = {"confidence": 0.9, "min_windows": 2}
SCENARIOS = ("memory", "step", "time")
BUDGET_KEY = {"memory": "max_memory_mb", "step": "max_mean_step_ms", "time": "max_trial_seconds"}


def workload(args: argparse.Namespace) -> Workload:
    return Workload(dataset="mnist_784", algorithm="logistic_regression", data_format="pandas", epochs=10_000,
                    max_steps=args.max_steps, eval_every=args.eval_every, name="mnist")


def run(args: argparse.Namespace, name: str, budget: dict, predictive: bool) -> tuple[list[TrialRecord], float]:
    study = Study(
        name=name, workloads=[workload(args)],
        search=Search(space={"batch_size": list(BATCHES), "learning_rate": list(RATES)}),
        budget=budget, stopping={"predicted": PREDICTED_RULE} if predictive else {},
        prediction=PREDICTION if predictive else {}, workers=args.workers,
        directory=str(Path(args.scratch) / name), mlflow_uri=None,
    )
    started = time.monotonic()
    records = list(tune(study, fresh=True).records)
    return records, time.monotonic() - started


def measured(record: TrialRecord, scenario: str) -> float:
    """What the hard rule of ``scenario`` compares with its budget."""
    if scenario == "memory":
        return record.peak("memory_mb") or 0.0
    if scenario == "step":
        return record.peak("mean_step_ms") or 0.0
    return record.wall_s


BOUNDARY = {"memory": (3000, 30000), "step": (300, 3000), "time": (3000, 30000)}


def midpoint_budget(records: list[TrialRecord], scenario: str) -> float:
    """The geometric midpoint between the costliest smaller batch and the cheapest larger one."""
    below, above = BOUNDARY[scenario]
    low = max(measured(r, scenario) for r in records if r.params["batch_size"] == below)
    high = min(measured(r, scenario) for r in records if r.params["batch_size"] == above)
    return round(math.sqrt(low * high), 1)


def cpu(records: list[TrialRecord]) -> float:
    return sum(r.cpu_s for r in records)


def report(scenario: str, limit: float, exhaustive: list[TrialRecord], arms: dict[str, tuple[list, float]]) -> dict:
    feasible = {r.config_id for r in exhaustive if measured(r, scenario) <= limit}
    losses = {r.config_id: r.last("val_loss") for r in exhaustive}
    best = min(feasible, key=lambda c: losses[c]) if feasible else None
    base_cpu = cpu(exhaustive)
    unit = {"memory": "MB", "step": "ms", "time": "s"}[scenario]
    print(f"\n== {scenario} budget: {BUDGET_KEY[scenario]} = {limit:g} {unit}  "
          f"({len(feasible)}/{len(exhaustive)} configurations meet it in the exhaustive run; "
          f"best feasible {best}, val_loss {losses.get(best, math.nan):.4f})")
    header = f"{'arm':<12}{'CPU-s':>8}{'ratio':>8}{'wall-s':>8}  {'ran':>4}{'hard':>5}{'pred':>5}{'skip':>5}  " \
             f"{'best feasible':<42}{'val_loss':>9}  {'same/1%':<8}{'false stops/skips':>18}"
    print(header)
    print(f"{'exhaustive':<12}{base_cpu:8.1f}{1:8.0%}{arms['exhaustive'][1]:8.1f}  {len(exhaustive):4d}"
          f"{0:5d}{0:5d}{0:5d}  {str(best):<42}{losses.get(best, math.nan):9.4f}  {'-':<8}{'-':>18}")
    summary = {}
    for arm, (records, wall_s) in arms.items():
        if arm == "exhaustive":
            continue
        counts = {m: sum(mechanism(r) == m for r in records) for m in ("hard budget stop", "predicted stop", "skip")}
        found = best_feasible(records)
        found_loss = found.objective[0] if found else math.nan
        same = found is not None and found.config_id in feasible and (
            found.config_id == best or found_loss <= losses[best] * 1.01)
        false = [r.config_id for r in records if mechanism(r) in ("predicted stop", "skip") and r.config_id in feasible]
        ratio = cpu(records) / base_cpu
        print(f"{arm:<12}{cpu(records):8.1f}{ratio:8.0%}{wall_s:8.1f}  "
              f"{sum(r.status is not TrialStatus.SKIPPED for r in records):4d}{counts['hard budget stop']:5d}"
              f"{counts['predicted stop']:5d}{counts['skip']:5d}  {str(found.config_id if found else None):<42}"
              f"{found_loss:9.4f}  {'yes' if same else 'NO':<8}{len(false):>18}")
        if found is not None and found.config_id not in feasible:
            print(f"{'':<12}{found.config_id} met the budget in this run but not in the exhaustive one (load)")
        if false:
            print(f"{'':<12}false: {', '.join(false)}")
        summary[arm] = {"ratio": ratio, "same": same, "false": len(false)}
    return summary


def _interpolate(x: float, xs: list[float], ys: list[float]) -> float:
    if x <= xs[0]:
        return ys[0]
    for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1] + (ys[-1] - ys[-2]) * (x - xs[-1]) / (xs[-1] - xs[-2])


def replay_trial(params: dict, config_id: str, exhaustive: list[TrialRecord], limit: float) -> TrialRecord:
    """What a proposal would measure, from the exhaustive run: memory linear in batch size
    (between the measured batch sizes), val_loss bilinear in log batch x log learning rate."""
    from frugalml import StopInfo, Window

    batch, rate = params["batch_size"], params["learning_rate"]
    memory = _interpolate(batch, list(BATCHES), [statistics.fmean(
        r.peak("memory_mb") for r in exhaustive if r.params["batch_size"] == b) for b in BATCHES])
    logs = [math.log(r) for r in sorted(RATES)]
    loss_at = [_interpolate(math.log(rate), logs, [next(
        r.last("val_loss") for r in exhaustive if r.params == {"batch_size": b, "learning_rate": lr})
        for lr in sorted(RATES)]) for b in BATCHES]
    loss = _interpolate(math.log(batch), [math.log(b) for b in BATCHES], loss_at)
    common = dict(trial_id=f"mnist/{config_id}/r0", number=0, workload="mnist", config_id=config_id, repeat=0,
                  params=params, steps_planned=40, steps_done=40, cpu_s=1.0)
    if memory > limit:
        return TrialRecord(**{**common, "steps_done": 1}, status=TrialStatus.STOPPED,
                           stop=StopInfo("max_memory_mb", "system", 1, memory, limit, "memory"),
                           windows=(Window(1, {"memory_mb": memory}),))
    return TrialRecord(**common, status=TrialStatus.COMPLETED,
                       windows=(Window(40, {"memory_mb": memory, "val_loss": loss, "mean_step_ms": 10.0}),))


def search_loop(args: argparse.Namespace, exhaustive: list[TrialRecord], limit: float) -> None:
    """TPE plain / with constraints / with constraints and skipping, replayed on measured costs."""
    from frugalml.prediction import CostScreen, DatasetShape, PredictionSettings

    space = {"batch_size": {"low": 16, "high": 32768, "log": True, "int": True},
             "learning_rate": {"low": 1e-4, "high": 0.1, "log": True}}
    print(f"\n== search (replayed on the exhaustive run's costs): TPE on batch_size [16, 32768] x learning_rate "
          f"[1e-4, 0.1] (log), {args.n_trials} proposals x {args.seeds} seeds, max_memory_mb = {limit:g}")
    print(f"{'arm':<26}{'over budget: 1st half':>22}{'2nd half':>10}{'ran over budget: 1st':>22}{'2nd':>7}"
          f"{'best val_loss':>15}")
    for arm in ("plain TPE", "TPE + constraints", "TPE + constraints + skip"):
        broke, ran_broke, best = [], [], []
        for seed in range(args.seeds):
            search = Search(method="tpe", space=space, n_trials=args.n_trials, seed=seed,
                            constraints=arm != "plain TPE")
            sampler, records = search.sampler({"max_memory_mb": limit}), []
            gate = CostScreen(PredictionSettings(**PREDICTION), {"max_memory_mb": limit}, "mnist",
                              DatasetShape(49000, 784), lambda: records) if arm.endswith("skip") else None
            while (config := sampler.ask()) is not None:
                skipped = gate and gate.skip(config_id=config.config_id, params=dict(config.params),
                                             steps_planned=40, number=len(records))
                record = skipped or replay_trial(dict(config.params), config.config_id, exhaustive, limit)
                records.append(record)
                sampler.tell(config, [record])
            over = [r.status is not TrialStatus.COMPLETED for r in records]
            ran = [r.status is TrialStatus.STOPPED for r in records]
            half = len(over) // 2
            broke.append((statistics.fmean(over[:half]), statistics.fmean(over[half:])))
            ran_broke.append((statistics.fmean(ran[:half]), statistics.fmean(ran[half:])))
            best.append(min(r.last("val_loss") for r in records if r.status is TrialStatus.COMPLETED))
        print(f"{arm:<26}{statistics.fmean(b[0] for b in broke):>22.0%}{statistics.fmean(b[1] for b in broke):>10.0%}"
              f"{statistics.fmean(b[0] for b in ran_broke):>22.0%}{statistics.fmean(b[1] for b in ran_broke):>7.0%}"
              f"{statistics.fmean(best):>15.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--memory-mb", type=float)
    parser.add_argument("--step-ms", type=float)
    parser.add_argument("--trial-s", type=float)
    parser.add_argument("--no-hard", action="store_true", help="skip the hard-rules-only arm")
    parser.add_argument("--search", action="store_true", help="also compare TPE with and without constraints")
    parser.add_argument("--directory", help="keep the studies here (default: a temporary folder)")
    parser.add_argument("--reuse-exhaustive", action="store_true",
                        help="with --directory: read the exhaustive run stored there instead of running it")
    parser.add_argument("--n-trials", type=int, default=40, help="proposals per replayed search")
    parser.add_argument("--seeds", type=int, default=10, help="replayed searches per arm")
    args = parser.parse_args()
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if "FRUGALML_DATA_DIR" not in os.environ and shared.is_dir():
        os.environ["FRUGALML_DATA_DIR"] = str(shared)
    with tempfile.TemporaryDirectory(prefix="frugalml-bench-") as scratch:
        args.scratch = args.directory or scratch
        print(f"mnist_784, logistic regression, pandas batches, {args.max_steps} steps per trial "
              f"(window {args.eval_every}), {args.workers} workers, thesis grid of {len(BATCHES) * len(RATES)}")
        if args.reuse_exhaustive and args.directory:
            from frugalml import load_result

            exhaustive = (list(load_result(Path(args.directory) / "exhaustive").records), math.nan)
        else:
            exhaustive = run(args, "exhaustive", {}, False)
        fixed = {"memory": args.memory_mb, "step": args.step_ms, "time": args.trial_s}
        results = {}
        for scenario in args.scenarios:
            limit = fixed[scenario] or midpoint_budget(exhaustive[0], scenario)
            budget = {BUDGET_KEY[scenario]: limit}
            arms = {"exhaustive": exhaustive}
            if not args.no_hard:
                arms["hard"] = run(args, f"hard-{scenario}", budget, False)
            arms["predictive"] = run(args, f"predictive-{scenario}", budget, True)
            results[scenario] = report(scenario, limit, exhaustive[0], arms)
        print("\nsummary (predictive vs exhaustive): " + "; ".join(
            f"{s}: {r['predictive']['ratio']:.0%} CPU-s, same best {'yes' if r['predictive']['same'] else 'NO'}, "
            f"{r['predictive']['false']} false stops/skips" for s, r in results.items()))
        if args.search:
            search_loop(args, exhaustive[0], fixed["memory"] or midpoint_budget(exhaustive[0], "memory"))


if __name__ == "__main__":
    main()
