"""Watchdog cost: the parent's CPU per trial-second of LocalExecutor, by concurrency and peers.

The LocalExecutor's parent process watches every running trial: it samples the
worker's process tree every ``sample_interval_s`` (0.1 s), turns each evaluation
window into a record, and applies the stopping rules to a fresh ``TrialView`` on
every sample (per-sample rules) and every window (all rules). Each view reads the
finished peers and the study's CPU-seconds from the tuner's ``StudyState``, updated
once per finished trial (before it, closures that rescanned the records list on
every view; the script runs against either, so an old checkout on PYTHONPATH gives
the before figure). This script runs that loop for real and measures what it
costs the parent.

Each trial is a cheap training loop that sleeps ``--step-ms`` (5 ms) per step,
calls ``trial.step(loss=..., n_samples=32)`` and reports ``val_loss`` every 20
steps (a window every ~0.1 s), so 32 trials fit on a 2-core machine. The rules are
a realistic set, all generous so no trial stops: MemoryBudget(4000),
StepTimeBudget(1000), MedianStopping(), Patience(50) and PredictedBudget on the
same budgets. Synthetic finished peers of the same workload (COMPLETED, a window
every 20 steps with train/val loss, mean_step_ms, memory_mb, wall_s, ...) start in
the study's records list, with worse val_loss than the running trials so median
stopping reads them all but never fires; ``peers`` and ``study_cpu_s`` are the
tuner's own closures over that list, and trials that finish are appended to it,
as the tuner does.

For each (trials at once, finished peers) case it submits all trials at once,
then calls ``executor.poll(0.1)`` until all have ended, and prints:

* ``ms/trial-s``: the parent's CPU during the poll loop (``time.process_time``:
  all its threads, no child processes) per second of trial wall time summed over
  trials; the figure that scales a study's watchdog bill;
* ``% core``: the same CPU as a share of one core over the loop's wall time;
* ``checks/trial-s``: rule checks (one ``TrialView`` each, counted by a no-op
  rule) per trial-second: ~1/``sample_interval_s`` samples plus one per window,
  ~20 at the defaults; fewer means the parent could not keep its cadence;
* ``us/check``: the loop's parent CPU per check, everything in the loop included;
* ``submit ms``: the parent's CPU per ``submit`` (starting a worker);
* ``step ms``: the trials' mean step time; far above ``--step-ms`` means the
  machine was saturated and the figures include contention.

    python benchmarks/watchdog_cost.py [--quick] [--json] [--steps 1500] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

WORKLOAD = "watchdog-bench"
EVAL_EVERY = 20
BUDGET_MB = 4000.0
BUDGET_STEP_MS = 1000.0
BUDGET_TRIAL_S = 3600.0
CASES = ((2, 100), (8, 0), (8, 100), (8, 400), (32, 100))  # (trials at once, finished peers)


def train(trial, steps: int, step_s: float) -> None:
    """A training loop that costs almost no CPU: sleep, step, report every window."""
    for step in range(1, steps + 1):
        time.sleep(step_s)
        if trial.step(loss=1.0 / (1.0 + step / 100.0), n_samples=32):
            trial.report(val_loss=1.0 / (1.0 + step / 200.0))  # below 1: better than every peer


def make_peers(count: int, steps: int, step_s: float) -> list:
    """``count`` finished trials of the workload, with windows like a real run's."""
    import random

    from frugalml.records import TrialRecord, TrialStatus, Window

    rng = random.Random(0)
    step_ms = step_s * 1000.0
    peers = []
    for number in range(count):
        windows = []
        for step in range(EVAL_EVERY, steps + 1, EVAL_EVERY):
            mean_step_ms = step_ms * rng.uniform(1.0, 1.1)
            windows.append(Window(step, {
                "train_loss": 1.5 + 1.0 / (1.0 + step / 100.0),
                "val_loss": 1.5 + 1.0 / (1.0 + step / 200.0) + rng.uniform(0.0, 0.1),  # worse than the trials'
                "mean_step_ms": mean_step_ms,
                "throughput_sps": 32 / mean_step_ms * 1000.0,
                "wall_s": step * mean_step_ms / 1000.0,
                "cpu_percent": rng.uniform(1.0, 3.0),
                "memory_mb": rng.uniform(30.0, 40.0),
            }))
        wall_s = windows[-1].values["wall_s"] if windows else 0.0
        peers.append(TrialRecord(
            trial_id=f"{WORKLOAD}/p{number}/r0", number=number, workload=WORKLOAD, config_id=f"p{number}",
            repeat=0, params={"learning_rate": rng.uniform(1e-4, 1e-1)}, status=TrialStatus.COMPLETED,
            steps_done=steps, steps_planned=steps, wall_s=wall_s, cpu_s=0.02 * wall_s,
            train_loss=tuple(w.values["train_loss"] for w in windows), windows=tuple(windows),
        ))
    return peers


def make_rules() -> tuple[list, list[int]]:
    """The rules under test, plus a no-op per-sample rule that counts the views checked."""
    from frugalml.stopping import (
        SYSTEM,
        MedianStopping,
        MemoryBudget,
        Patience,
        PredictedBudget,
        StepTimeBudget,
        StoppingRule,
    )

    checks = [0]

    class CountChecks(StoppingRule):
        name, kind = "count_checks", SYSTEM

        def check(self, view) -> None:
            checks[0] += 1

    rules = [
        MemoryBudget(BUDGET_MB),
        StepTimeBudget(BUDGET_STEP_MS),
        MedianStopping(),
        Patience(50),
        PredictedBudget(max_memory_mb=BUDGET_MB, max_mean_step_ms=BUDGET_STEP_MS, max_trial_seconds=BUDGET_TRIAL_S),
        CountChecks(),
    ]
    return rules, checks


class _Appender(list):
    """The tuner's records list and its StudyState, appended to together."""

    def __init__(self, records: list, state) -> None:
        super().__init__(records)
        self.state = state

    def append(self, record) -> None:
        super().append(record)
        self.state.add(record)


def run(trials: int, peers: list, steps: int, step_s: float, interval: float) -> dict:
    """Run ``trials`` trials at once against ``peers``; the parent's CPU over the poll loop."""
    import frugalml.executors as executors
    from frugalml.executors import LocalExecutor, TrialTask
    from frugalml.records import TrialStatus

    rules, checks = make_rules()
    records = list(peers)  # the tuner's self.records: finished trials, appended to as trials end
    if hasattr(executors, "StudyState"):  # the tuner keeps a StudyState, updated once per finished trial
        state = executors.StudyState(records)
        executor = LocalExecutor(trials, state, rules=rules, sample_interval_s=interval, pin=False)
        records = _Appender(records, state)
    else:  # frugalml before the StudyState (run with PYTHONPATH=<old checkout>/src to compare)
        executor = LocalExecutor(
            trials, rules=rules, sample_interval_s=interval, pin=False,
            peers=lambda name: [r for r in records if r.workload == name and r.status.finished],
            study_cpu_s=lambda: sum(r.cpu_s for r in records),
        )
    cpu_start = time.process_time()
    for number in range(trials):
        executor.submit(TrialTask(
            f"{WORKLOAD}/c{number}/r0", number, WORKLOAD, f"c{number}", 0, {"learning_rate": 0.01}, train,
            train_kwargs={"steps": steps, "step_s": step_s}, eval_every=EVAL_EVERY, steps_planned=steps,
        ))
    cpu_submitted, wall_start = time.process_time(), time.perf_counter()
    checks[0] = 0
    finished = []
    try:
        while executor.running:
            for record in executor.poll(interval):
                records.append(record)
                finished.append(record)
    except BaseException:
        executor.shutdown()
        raise
    loop_cpu_s, loop_wall_s = time.process_time() - cpu_submitted, time.perf_counter() - wall_start
    not_completed = [f"{r.trial_id}: {r.status.value} {r.stop.message if r.stop else r.error}"
                     for r in finished if r.status is not TrialStatus.COMPLETED]
    if not_completed:
        print(f"warning: {len(not_completed)} trial(s) did not complete: {not_completed[:3]}", file=sys.stderr)
    trial_s = sum(r.wall_s for r in finished)
    step_means = [m for r in finished if (m := r.mean("mean_step_ms")) is not None]
    return {
        "trials": trials,
        "peers": len(peers),
        "trial_s": trial_s,
        "loop_wall_s": loop_wall_s,
        "parent_cpu_s": loop_cpu_s,
        "cpu_ms_per_trial_s": loop_cpu_s * 1000.0 / trial_s if trial_s > 0 else math.nan,
        "core_percent": loop_cpu_s / loop_wall_s * 100.0 if loop_wall_s > 0 else math.nan,
        "submit_cpu_ms": (cpu_submitted - cpu_start) * 1000.0 / trials,
        "windows": sum(len(r.windows) for r in finished),
        "checks": checks[0],
        "checks_per_trial_s": checks[0] / trial_s if trial_s > 0 else math.nan,
        "cpu_us_per_check": loop_cpu_s * 1e6 / checks[0] if checks[0] else math.nan,
        "mean_step_ms": statistics.fmean(step_means) if step_means else math.nan,
        "not_completed": len(not_completed),
    }


def median_result(results: list[dict]) -> dict:
    """The repeat with the median CPU per trial-second (keeps each row's figures consistent)."""
    return sorted(results, key=lambda r: r["cpu_ms_per_trial_s"])[(len(results) - 1) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter trials (~2 s instead of ~8 s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--steps", type=int, default=None, help="steps per trial (default 1500, 400 with --quick)")
    parser.add_argument("--step-ms", type=float, default=5.0, help="sleep per training step")
    parser.add_argument("--interval", type=float, default=0.1, help="watchdog sample_interval_s")
    parser.add_argument("--repeats", type=int, default=1, help="runs per case; the median one is shown")
    args = parser.parse_args()
    steps = args.steps or (400 if args.quick else 1500)
    step_s = args.step_ms / 1000.0

    started = time.perf_counter()
    run(1, [], 2 * EVAL_EVERY, step_s, args.interval)  # warm-up: forkserver, imports, first rule calls
    peer_sets = {count: make_peers(count, steps, step_s) for count in sorted({p for _, p in CASES})}
    rows = []
    for trials, peers in CASES:
        results = [run(trials, peer_sets[peers], steps, step_s, args.interval) for _ in range(args.repeats)]
        rows.append(median_result(results))
    total_s = time.perf_counter() - started

    settings = {"steps": steps, "step_ms": args.step_ms, "eval_every": EVAL_EVERY, "interval_s": args.interval,
                "repeats": args.repeats, "total_s": total_s}
    if args.json:
        print(json.dumps({"settings": settings, "results": rows}, indent=2))
        return
    print(f"{steps} steps x {args.step_ms:g} ms per trial, a window every {EVAL_EVERY} steps, "
          f"sample_interval_s={args.interval:g}")
    print(f"{'trials':>6} {'peers':>5} {'trial-s':>8} {'parent CPU s':>12} {'ms/trial-s':>10} "
          f"{'% core':>6} {'checks/trial-s':>14} {'us/check':>8} {'submit ms':>9} {'step ms':>7}")
    for row in rows:
        flag = f"  ({row['not_completed']} not completed)" if row["not_completed"] else ""
        print(f"{row['trials']:>6} {row['peers']:>5} {row['trial_s']:>8.1f} {row['parent_cpu_s']:>12.2f} "
              f"{row['cpu_ms_per_trial_s']:>10.2f} {row['core_percent']:>6.1f} {row['checks_per_trial_s']:>14.1f} "
              f"{row['cpu_us_per_check']:>8.0f} {row['submit_cpu_ms']:>9.2f} {row['mean_step_ms']:>7.2f}{flag}")
    print(f"total {total_s:.0f} s")


if __name__ == "__main__":
    main()
