"""Compute saved, claimed vs. as it really was: each stopped trial against its full run.

For each study below, every configuration is first run in full with no budget; the
budgets are then set from what those full runs measured, so that the boundary falls
between two configurations, and the study is run again under them (the same script,
side by side). For each trial the budgeted run stopped:

    claimed = the stopped trial's ``cpu_s_saved`` (frugalml.accounting)
    actual  = the full run's CPU-s - the stopped trial's CPU-s
    set-up  = actual less the difference of the two runs' set-ups (CPU-s at the end of the
              first step: importing, loading data; paid once, ±0.2 CPU-s from one trial to
              the next), i.e. what the full run spent after its first step beyond what the
              stopped trial spent after its own

and the errors ``claimed / actual - 1`` (scored) and ``claimed / set-up - 1`` (shown beside it:
the same comparison without the set-up noise). A stop whose basis is ``unknown`` claims no
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

3. **torch**: a user's own PyTorch loop written with frugalml's adapter
   (``frugalml.integrations.torch.Batches``, as in docs/integrations.md): an MLP
   784-hidden-10 with Adam on 10,000 mnist rows, hidden {32, 64, 128, 256, 1024, 8192}, 3 epochs
   of batch 128 (237 steps), evaluation on 1,000 rows every 40 steps. Each trial imports PyTorch and
   loads its data (a set-up of several CPU-seconds: where the old rule credited 5-18x
   too much). A memory budget between hidden 1024 and 8192 (8192's weights, gradients
   and Adam state: ~100 MB more; it is stopped in its first optimiser steps) and a
   step-time budget at 0.75 x hidden 1024's steady step (1024 is stopped after its first
   window; on a busy machine, sometimes in it). The cost model's feature is ``hidden``.

All studies predict costs (``[prediction] skip = false``): a trial stopped before its
first window is credited at the cost model's CPU per step when no finished peer of
its family has one. Trials run one at a time, so the cost model has seen the smaller
configurations when the largest starts.

Usage::

    python benchmarks/savings_truth.py                # ~4-8 minutes on 2 busy cores
    python benchmarks/savings_truth.py --only torch   # one study
    python benchmarks/savings_truth.py --keep DIR     # keep the studies (frugalml show DIR/<study>)
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from frugalml import Search, Study, TrialRecord, TrialStatus, Workload, tune
from frugalml.accounting import FIRST_STEP_CPU_S, basis_mix, describe_mix

PREDICTION = {"skip": False, "min_observations": 2, "confidence": 0.9}


def thesis(max_steps: int) -> tuple[Workload, dict]:
    workload = Workload(dataset="mnist_784", algorithm="logistic_regression", data_format="pandas", epochs=10_000,
                        max_steps=max_steps, eval_every=max(1, max_steps // 6), name="thesis")
    return workload, {"batch_size": [30, 300, 3000, 30000], "learning_rate": [0.01, 0.001]}


def mlp(max_steps: int) -> tuple[Workload, dict]:
    workload = Workload(dataset="mnist_784", algorithm="mlp", epochs=10_000, max_steps=max_steps,
                        eval_every=max(1, max_steps // 6), name="mlp")
    return workload, {"width": [32, 64, 128, 256, 512, 2048]}  # the smaller ones: observations for the cost model


TORCH_ROWS, TORCH_VAL_ROWS, TORCH_BATCH = 10_000, 1_000, 128


def torch_mlp(trial, epochs: int = 3) -> None:
    """A user's PyTorch training function, written with frugalml's adapter (``Batches``).

    Module level, so that the worker processes can import it. Everything before the loop
    (importing PyTorch, loading mnist, building the model) is the trial's set-up.
    """
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from frugalml.integrations.torch import Batches
    from frugalml.workloads import prepare_dataset, resolve_dataset

    torch.set_num_threads(1)
    torch.manual_seed(0)
    X, y, X_test, y_test = prepare_dataset(resolve_dataset("mnist_784")).arrays(mmap=True)
    X = torch.from_numpy(np.asarray(X[:TORCH_ROWS], dtype=np.float32))
    y = torch.from_numpy(np.array(y[:TORCH_ROWS]))
    X_val = torch.from_numpy(np.asarray(X_test[:TORCH_VAL_ROWS], dtype=np.float32))
    y_val = torch.from_numpy(np.array(y_test[:TORCH_VAL_ROWS]))
    loader = DataLoader(TensorDataset(X, y), batch_size=TORCH_BATCH, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    hidden = trial.params["hidden"]
    model = torch.nn.Sequential(torch.nn.Linear(X.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=trial.params["lr"])
    batches = Batches(trial, loader, epochs)  # plans epochs x len(loader) steps
    for X_batch, y_batch in batches:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X_batch), y_batch)
        loss.backward()
        optimizer.step()
        if batches.step(loss):
            with torch.no_grad():
                trial.report(val_loss=float(F.cross_entropy(model(X_val), y_val)))


def adapter(max_steps: int) -> tuple[Workload, dict]:
    del max_steps  # planned by the adapter: 3 epochs of 79 batches
    workload = Workload(train=torch_mlp, train_kwargs={"epochs": 3}, eval_every=40, name="torch")
    return workload, {"hidden": [32, 64, 128, 256, 1024, 8192], "lr": [0.001]}  # the smaller: cost-model observations


STUDIES = {"thesis": thesis, "mlp": mlp, "torch": adapter}


def run(name: str, workload: Workload, space: dict, budget: dict, scratch: str) -> list[TrialRecord]:
    prediction = {**PREDICTION, "features": ["hidden"]} if "hidden" in space else PREDICTION
    study = Study(name=name, workloads=[workload], search=Search(space=space), budget=budget, workers=1,
                  prediction=prediction if budget else {}, directory=str(Path(scratch) / name), mlflow_uri=None)
    return list(tune(study, fresh=True).records)


def steady_step_ms(record: TrialRecord) -> float:
    values = [w.values["mean_step_ms"] for w in record.windows[1:] if "mean_step_ms" in w.values]
    return statistics.median(values) if values else math.nan


def budgets(kind: str, full: list[TrialRecord]) -> dict:
    """Budgets whose boundary falls between neighbouring configurations, from the full runs."""
    by_size = sorted(full, key=lambda r: r.params.get("width", r.params.get("hidden", r.params.get("batch_size"))))
    peaks = [r.peak("memory_mb") for r in by_size]
    if kind == "thesis":
        return {"max_memory_mb": round(math.sqrt(max(peaks[:-2]) * peaks[-1]), 1)}
    steps = [steady_step_ms(r) for r in by_size]
    # step time: under the second largest's steady step, over the configuration below it (mlp: width 128,
    # torch: hidden 256). mlp: 0.6 x width 512's (its first window, allowed twice the budget, may pass);
    # torch: 0.75 x hidden 1024's, so that its first window (~1.3 x its steady step) passes and it stops after it
    below, share = (2, 0.6) if kind == "mlp" else (-3, 0.75)
    return {"max_memory_mb": round((peaks[-2] + peaks[-1]) / 2, 1),
            "max_mean_step_ms": round(max(share * steps[-2], 1.5 * steps[below]), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="steps per trial (default 60)")
    parser.add_argument("--only", choices=tuple(STUDIES), help="run one study")
    parser.add_argument("--keep", metavar="DIR", help="keep the studies in DIR (default: a temporary folder)")
    args = parser.parse_args()
    started = time.monotonic()
    errors: list[float] = []
    after_setup_errors: list[float] = []
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    with tempfile.TemporaryDirectory() as temporary:
        scratch = args.keep or temporary
        for kind, make in STUDIES.items():
            if args.only and kind != args.only:
                continue
            workload, space = make(args.steps)
            full = run(f"{kind}-full", workload, space, {}, scratch)
            budget = budgets(kind, full)
            budgeted = run(f"{kind}-budgeted", workload, space, budget, scratch)
            full_by_config = {r.config_id: r for r in full}
            print(f"\n{kind}: budget {budget}; saved from: {describe_mix(basis_mix(budgeted)) or 'nothing stopped'}")
            print(f"  {'configuration':34} {'stop':18} {'phase':8} {'steps':>7} {'basis':9} "
                  f"{'claimed':>8} {'actual':>8} {'old rule':>8} {'error':>7} {'set-up':>7} {'error':>7}")
            for record in budgeted:
                if record.status is not TrialStatus.STOPPED:
                    continue
                reference = full_by_config[record.config_id]
                actual = reference.cpu_s - record.cpu_s
                old = (record.steps_saved * record.cpu_s / max(record.steps_done, 1))
                claimed = None if record.saved_basis == "unknown" else record.cpu_s_saved
                error = claimed / actual - 1 if claimed is not None and actual > 0 else None
                setups = reference.info.get(FIRST_STEP_CPU_S), record.info.get(FIRST_STEP_CPU_S)
                after_setup = actual - (setups[0] - setups[1]) if None not in setups else math.nan
                error_after_setup = (claimed / after_setup - 1 if claimed is not None and after_setup > 0
                                     else None)
                if error is not None:
                    errors.append(error)
                if error_after_setup is not None:
                    after_setup_errors.append(error_after_setup)
                label = ", ".join(f"{k}={v}" for k, v in record.params.items() if len(space.get(k, ())) > 1)
                print(f"  {label:34} {record.stop.rule:18} {record.stop_phase or '-':8} "
                      f"{record.steps_done:>3}/{record.steps_planned:<3} {record.saved_basis or '-':9} "
                      f"{'unknown' if claimed is None else f'{claimed:8.2f}':>8} {actual:8.2f} {old:8.2f} "
                      f"{'-' if error is None else f'{error:+.0%}':>7} {after_setup:7.2f} "
                      f"{'-' if error_after_setup is None else f'{error_after_setup:+.0%}':>7}")
    if errors:
        absolute = [abs(e) for e in errors]
        print(f"\nmedian abs error: {statistics.median(absolute):.0%}")
        print(f"worst: {max(absolute):.0%}")
        if after_setup_errors:
            absolute = [abs(e) for e in after_setup_errors]
            print(f"against the full run after its set-up: median {statistics.median(absolute):.0%}, "
                  f"worst {max(absolute):.0%}")
    else:
        print("\nno stopped trial with a claimed figure")
    print(f"({time.monotonic() - started:.0f} s; load average {os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    main()
