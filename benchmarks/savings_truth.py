"""Compute saved, claimed vs. as it really was: each stopped trial against its full run.

For each study below, every configuration is first run in full with no budget; the
budgets are then set from what those full runs measured, so that the boundary falls
between two configurations, and the study is run again under them (the same script,
side by side). For each trial the budgeted run stopped:

    claimed = the stopped trial's ``cpu_s_saved`` (frugalml.accounting)
    actual  = the full run's CPU-s - the stopped trial's CPU-s

and the error ``claimed / actual - 1``. A stop whose basis is ``unknown`` claims no
number and is listed, not scored.

Studies:

1. **thesis**: the thesis grid (mnist_784, logistic regression on a pandas frame,
   batch {30, 300, 3000, 30000} x learning rate {0.01, 0.001}) under a memory budget
   between the two largest batches' peaks (batch 30000 is stopped in its first steps).
2. **mlp**: the built-in MLP on mnist_784, width {32, 64, 128, 256, 512, 2048}, 60 steps,
   evaluation every 10, under a memory budget between widths 512 and 2048 (2048 is
   stopped in its first steps, before any window) and a step-time budget at 0.6 x width
   512's steady step time (512 is stopped mid-run; on a busy machine, sometimes in its
   first window).

Both studies predict costs (``[prediction] skip = false``): a trial stopped before its
first window is credited at the cost model's CPU per step when no finished peer of
its family has one. Trials run one at a time, so the cost model has seen the smaller
configurations when the largest starts.

Usage::

    python benchmarks/savings_truth.py          # ~5 minutes on 2 busy cores
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
from frugalml.accounting import basis_mix, describe_mix

PREDICTION = {"skip": False, "min_observations": 2, "confidence": 0.9}


def thesis(max_steps: int) -> tuple[Workload, dict]:
    workload = Workload(dataset="mnist_784", algorithm="logistic_regression", data_format="pandas", epochs=10_000,
                        max_steps=max_steps, eval_every=max(1, max_steps // 6), name="thesis")
    return workload, {"batch_size": [30, 300, 3000, 30000], "learning_rate": [0.01, 0.001]}


def mlp(max_steps: int) -> tuple[Workload, dict]:
    workload = Workload(dataset="mnist_784", algorithm="mlp", epochs=10_000, max_steps=max_steps,
                        eval_every=max(1, max_steps // 6), name="mlp")
    return workload, {"width": [32, 64, 128, 256, 512, 2048]}  # the smaller ones: observations for the cost model


def run(name: str, workload: Workload, space: dict, budget: dict, scratch: str) -> list[TrialRecord]:
    study = Study(name=name, workloads=[workload], search=Search(space=space), budget=budget, workers=1,
                  prediction=PREDICTION if budget else {}, directory=str(Path(scratch) / name), mlflow_uri=None)
    return list(tune(study, fresh=True).records)


def steady_step_ms(record: TrialRecord) -> float:
    values = [w.values["mean_step_ms"] for w in record.windows[1:] if "mean_step_ms" in w.values]
    return statistics.median(values) if values else math.nan


def budgets(kind: str, full: list[TrialRecord]) -> dict:
    """Budgets whose boundary falls between neighbouring configurations, from the full runs."""
    by_size = sorted(full, key=lambda r: r.params.get("width", r.params.get("batch_size")))
    peaks = [r.peak("memory_mb") for r in by_size]
    if kind == "thesis":
        return {"max_memory_mb": round(math.sqrt(max(peaks[:-2]) * peaks[-1]), 1)}
    steps = [steady_step_ms(r) for r in by_size]
    # step time: well under width 512's steady step (its first window may take twice it), over 128's
    return {"max_memory_mb": round((peaks[-2] + peaks[-1]) / 2, 1),
            "max_mean_step_ms": round(max(0.6 * steps[-2], 1.5 * steps[2]), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="steps per trial (default 60)")
    parser.add_argument("--only", choices=("thesis", "mlp"), help="run one study")
    args = parser.parse_args()
    started = time.monotonic()
    errors: list[float] = []
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    with tempfile.TemporaryDirectory() as scratch:
        for kind, make in (("thesis", thesis), ("mlp", mlp)):
            if args.only and kind != args.only:
                continue
            workload, space = make(args.steps)
            full = run(f"{kind}-full", workload, space, {}, scratch)
            budget = budgets(kind, full)
            budgeted = run(f"{kind}-budgeted", workload, space, budget, scratch)
            full_by_config = {r.config_id: r for r in full}
            print(f"\n{kind}: budget {budget}; saved from: {describe_mix(basis_mix(budgeted)) or 'nothing stopped'}")
            print(f"  {'configuration':34} {'stop':18} {'phase':8} {'steps':>7} {'basis':9} "
                  f"{'claimed':>8} {'actual':>8} {'old rule':>8} {'error':>7}")
            for record in budgeted:
                if record.status is not TrialStatus.STOPPED:
                    continue
                reference = full_by_config[record.config_id]
                actual = reference.cpu_s - record.cpu_s
                old = (record.steps_saved * record.cpu_s / max(record.steps_done, 1))
                claimed = None if record.saved_basis == "unknown" else record.cpu_s_saved
                error = claimed / actual - 1 if claimed is not None and actual > 0 else None
                if error is not None:
                    errors.append(error)
                label = ", ".join(f"{k}={v}" for k, v in record.params.items() if k in space)
                print(f"  {label:34} {record.stop.rule:18} {record.stop_phase or '-':8} "
                      f"{record.steps_done:>3}/{record.steps_planned:<3} {record.saved_basis or '-':9} "
                      f"{'unknown' if claimed is None else f'{claimed:8.2f}':>8} {actual:8.2f} {old:8.2f} "
                      f"{'-' if error is None else f'{error:+.0%}':>7}")
    if errors:
        absolute = [abs(e) for e in errors]
        print(f"\nmedian abs error: {statistics.median(absolute):.0%}")
        print(f"worst: {max(absolute):.0%}")
    else:
        print("\nno stopped trial with a claimed figure")
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
