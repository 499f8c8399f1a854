"""Adapter overhead: XGBoost, LightGBM and scikit-learn loops with and without frugalml's adapters.

Everything runs inside one real trial (a LocalExecutor worker pinned to one core, the
parent's watchdog sampling it at 10 Hz), so the callbacks talk to a real Trial: a pipe
to the parent and shared memory. Two measurements, side by side in that process:

* whole loop, A/B interleaved: ``xgb.train`` and ``lgb.train`` for the same rounds on
  the same data (casp_protein, with a validation set evaluated every round in both
  variants), with and without the callback, alternating; the ratio is with / without.
  Whole-loop ratios on a shared 2-core VM move by several percent between rounds,
  more than the effect sought, so the script also measures:
* the adapter alone: ``FrugalmlCallback.after_iteration`` (XGBoost) and
  ``FrugalmlCallback(env)`` (LightGBM) called in a loop with a realistic evaluation
  log, beside ``trial.step`` called by hand (what any instrumented loop pays), and
  ``frugalml.integrations.sklearn.fit`` around an estimator whose ``fit``
  does nothing (one ``fit`` is one step: a plan message, a clock reset and a
  ``trial.step`` per call), as microseconds per call (median of 10 batches) and as a
  share of a 5 ms step.

The target is < 1 % of a 5 ms step (50 us).

    python benchmarks/adapter_overhead_boosting.py [--rounds 200] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

STEP_MS = 5.0  # the reference step the per-call cost is compared with


def _casp(rows: int):
    import pandas as pd

    data_dir = os.environ.get("FRUGALML_DATA_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                                    "data")
    frame = pd.read_csv(os.path.join(data_dir, "casp_protein.csv.gz"))
    X, y = frame.drop(columns="target").to_numpy(np.float64), frame["target"].to_numpy(np.float64)
    return X[:rows], y[:rows], X[-5000:], y[-5000:]


def _loops(trial, rounds: int, repeats: int, rows: int) -> dict[str, float]:
    """A/B whole-loop timings, interleaved; returns medians (ms per round) and the median ratio."""
    import lightgbm as lgb
    import xgboost as xgb

    from frugalml.integrations.lightgbm import FrugalmlCallback as LightgbmCallback
    from frugalml.integrations.xgboost import FrugalmlCallback as XgboostCallback

    X, y, X_val, y_val = _casp(rows)
    dtrain, dval = xgb.DMatrix(X, y), xgb.DMatrix(X_val, y_val)
    ltrain = lgb.Dataset(X, y, params={"verbose": -1}).construct()
    lval = lgb.Dataset(X_val, y_val, reference=ltrain).construct()
    xgb_params = {"max_depth": 4, "nthread": 1, "eta": 0.1}
    lgb_params = {"num_leaves": 15, "num_threads": 1, "verbose": -1, "learning_rate": 0.1}

    def run_xgb(callbacks):
        start = time.perf_counter()
        xgb.train(xgb_params, dtrain, rounds, evals=[(dtrain, "train"), (dval, "val")], verbose_eval=False,
                  callbacks=callbacks)
        return (time.perf_counter() - start) / rounds * 1000

    def run_lgb(callbacks):
        start = time.perf_counter()
        lgb.train(lgb_params, ltrain, rounds, valid_sets=[ltrain, lval], callbacks=callbacks)
        return (time.perf_counter() - start) / rounds * 1000

    results: dict[str, list[float]] = {k: [] for k in ("xgb_bare", "xgb_frugal", "lgb_bare", "lgb_frugal")}
    run_xgb([])  # warm-up: first-call costs out of the timing
    run_lgb([])
    for repeat in range(repeats):
        pairs = [("xgb_bare", lambda: run_xgb([])),
                 ("xgb_frugal", lambda: run_xgb([XgboostCallback(trial, rounds=rounds, n_samples=rows)])),
                 ("lgb_bare", lambda: run_lgb([])),
                 ("lgb_frugal", lambda: run_lgb([LightgbmCallback(trial, rounds=rounds)]))]
        if repeat % 2:  # alternate which variant goes first
            pairs = [pairs[1], pairs[0], pairs[3], pairs[2]]
        for name, run in pairs:
            results[name].append(run())
    out = {f"{k}_ms": statistics.median(v) for k, v in results.items()}
    for fw in ("xgb", "lgb"):
        out[f"{fw}_ratio"] = statistics.median(f / b for b, f in zip(results[f"{fw}_bare"], results[f"{fw}_frugal"]))
        out[f"{fw}_ratio_min"] = min(f / b for b, f in zip(results[f"{fw}_bare"], results[f"{fw}_frugal"]))
        out[f"{fw}_ratio_max"] = max(f / b for b, f in zip(results[f"{fw}_bare"], results[f"{fw}_frugal"]))
    return out


class _NoFit:
    """An ensemble whose fit does nothing: what remains is the adapter's own cost."""

    def __init__(self) -> None:
        self.params = {"warm_start": False, "n_estimators": 1_000_000}

    def get_params(self, deep: bool = True) -> dict:
        return dict(self.params)

    def set_params(self, **params) -> _NoFit:
        self.params.update(params)
        return self

    def fit(self, X, y=None):
        return self


def _median_us(call, n: int, batches: int = 10) -> float:
    """Median over ``batches`` of the microseconds per call of ``call(i)`` (a busy VM stalls some batches)."""
    per_batch = max(1, n // batches)
    timings = []
    for batch in range(batches):
        start = time.perf_counter()
        for i in range(batch * per_batch, (batch + 1) * per_batch):
            call(i)
        timings.append((time.perf_counter() - start) / per_batch * 1e6)
    return statistics.median(timings)


def _per_call(trial, calls: int) -> dict[str, float]:
    """Microseconds per call of each adapter, with realistic evaluation logs, inside the trial."""
    from lightgbm.basic import EvalResult
    from lightgbm.callback import CallbackEnv

    from frugalml.integrations.lightgbm import FrugalmlCallback as LightgbmCallback
    from frugalml.integrations.sklearn import fit
    from frugalml.integrations.xgboost import FrugalmlCallback as XgboostCallback

    def bare_step(i: int) -> None:
        if trial.step(0.5, 1000):
            trial.report(val_loss=0.5)

    step_us = _median_us(bare_step, calls)
    history = [0.5] * 100
    evals_log = {"train": {"rmse": history, "mae": history}, "val": {"rmse": history, "mae": history}}
    callback = XgboostCallback(trial, rounds=calls, n_samples=1000)
    callback.before_training(None)
    xgb_us = _median_us(lambda epoch: callback.after_iteration(None, epoch, evals_log), calls)

    results = [EvalResult("training", "l2", 0.5, False), EvalResult("training", "l1", 0.4, False),
               EvalResult("valid_1", "l2", 0.6, False), EvalResult("valid_1", "l1", 0.5, False)]
    lightgbm_callback = LightgbmCallback(trial)
    envs = [CallbackEnv(model=None, params={}, iteration=i, begin_iteration=0, end_iteration=calls,
                        evaluation_result_list=results) for i in range(calls)]
    lgb_us = _median_us(lambda i: lightgbm_callback(envs[i]), calls)

    X, y = np.zeros((1000, 9)), np.zeros(1000)
    estimator = _NoFit()
    fit_calls = max(10, calls // 10)
    sklearn_us = _median_us(lambda i: fit(trial, estimator, X, y), fit_calls)
    sklearn_us -= _median_us(lambda i: estimator.fit(X, y), fit_calls)
    steps = 1000  # fit(n_steps=...): per warm-start step, the plan and clock reset spread over the steps
    warm_us = _median_us(lambda i: fit(trial, estimator, X, y, n_steps=steps), max(10, calls // steps)) / steps
    warm_us -= _median_us(lambda i: estimator.set_params(warm_start=True, n_estimators=i).fit(X, y), calls)
    return {"step_us": step_us, "xgb_us": xgb_us, "lgb_us": lgb_us, "sklearn_us": sklearn_us,
            "sklearn_step_us": warm_us}


def bench_train(trial, rounds: int, repeats: int, rows: int, calls: int) -> None:
    metrics = _loops(trial, rounds, repeats, rows)
    metrics.update(_per_call(trial, calls))
    trial.report(**metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="boosting rounds per whole-loop run")
    parser.add_argument("--repeats", type=int, default=11, help="A/B pairs per framework")
    parser.add_argument("--rows", type=int, default=20_000, help="casp_protein training rows")
    parser.add_argument("--calls", type=int, default=100_000, help="calls per adapter in the per-call measurement")
    args = parser.parse_args()

    from _watched import run_watched

    record = run_watched(bench_train, {"rounds": args.rounds, "repeats": args.repeats, "rows": args.rows,
                                       "calls": args.calls})
    m = {name: record.last(name) for name in record.windows[-1].values}

    print(f"whole loop, {args.rounds} rounds on {args.rows} casp_protein rows, median of {args.repeats} "
          f"interleaved A/B pairs (validation set evaluated every round in both):")
    print(f"{'':10} {'bare ms/round':>14} {'frugalml ms/round':>18} {'ratio':>7} {'range':>15}")
    for fw, label in (("xgb", "xgb.train"), ("lgb", "lgb.train")):
        print(f"{label:10} {m[f'{fw}_bare_ms']:>14.3f} {m[f'{fw}_frugal_ms']:>18.3f} {m[f'{fw}_ratio']:>7.3f} "
              f"{m[f'{fw}_ratio_min']:>7.3f}-{m[f'{fw}_ratio_max']:.3f}")
    print(f"the adapter alone, inside the watched trial ({args.calls} calls; eval_every=100), and what it adds "
          f"to the trial.step it makes:")
    for key, label in (("step_us", "trial.step (+ report per window) by hand"),
                       ("xgb_us", "xgboost FrugalmlCallback.after_iteration"),
                       ("lgb_us", "lightgbm FrugalmlCallback(env)"),
                       ("sklearn_us", "sklearn fit(trial, ...), less the estimator's fit"),
                       ("sklearn_step_us", "  per step of fit(..., n_steps=1000)")):
        added = "" if key == "step_us" else f"  (+{m[key] - m['step_us']:.2f} us over trial.step)"
        print(f"  {label:50} {m[key]:7.2f} us/call = {m[key] / (STEP_MS * 1000) * 100:.3f} % of a "
              f"{STEP_MS:g} ms step{added}")


if __name__ == "__main__":
    main()
