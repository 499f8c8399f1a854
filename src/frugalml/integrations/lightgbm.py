"""LightGBM: one boosting round is one frugalml step.

:class:`FrugalmlCallback` is a LightGBM callback (a callable taking ``CallbackEnv``) for
``lgb.train``, ``lgb.cv`` and the scikit-learn API (``LGBMClassifier().fit(...,
callbacks=[...])``). It plans the run with ``trial.plan`` (at once with ``rounds=``, else
in the first round, from ``end_iteration - begin_iteration``). Each round it calls
``trial.step`` with the training loss (when the training data is among the validation
sets) and the training rows; when a window ends, ``trial.report`` with the validation
metric as ``val_loss`` (``accuracy`` too with ``binary_error``/``multi_error``, and every
metric of that set under its own name).

Example::

    import lightgbm as lgb
    from frugalml.integrations.lightgbm import FrugalmlCallback

    def train(trial, rounds=200):
        booster = lgb.train({"num_leaves": trial.params["num_leaves"]}, lgb.Dataset(X, y), num_boost_round=rounds,
                            valid_sets=[lgb.Dataset(X_val, y_val)], callbacks=[FrugalmlCallback(trial, rounds=rounds)])
        trial.log_model(booster)

Budgets are enforced by frugalml.tune's watchdog from outside the process, mid-round
if need be. LightGBM allocates its histogram pool (``num_leaves`` x bins) while it
builds the booster, before the first round and before any callback runs: pass
``rounds`` so that a trial killed there still has a planned length, and with it the
compute its stop saved.

A stop that arrives as an exception from the trial (the in-process executor)
propagates out of ``lgb.train`` unchanged. LightGBM's own way to stop,
``EarlyStopException``, is caught inside ``lgb.train``, which then returns normally: the
code after it would log a half-trained model and the trial would be recorded as
completed. ``lgb.early_stopping`` works beside this callback as usual (LightGBM runs the
callbacks you pass before its own, so the round it stops in is counted).

The first step's time starts when the callback is made (set-up before it is not a
step), so it includes the binning LightGBM does inside ``lgb.train``; construct the
Dataset (``train_set.construct()``) before making the callback to keep that out too.
Cost per round: ``trial.step`` plus a
scan of the evaluation list (1-6 us more than the step; benchmarks/adapter_overhead_boosting.py).
"""

from __future__ import annotations

import math
from typing import Any

from frugalml.exceptions import TrialUsageError
from frugalml.integrations._frameworks import require, require_trial
from frugalml.metrics import ACCURACY, VAL_LOSS
from frugalml.validation import POSITIVE_INT, check

lightgbm = require("lightgbm", "4.0", "lightgbm")

__all__ = ["FrugalmlCallback"]

TRAIN = ("training", "train")  # lgb.train's default name for the training data; lgb.cv's
_ERROR = ("binary_error", "multi_error")  # 1 - error is the accuracy


class FrugalmlCallback:
    """Reports each boosting round to a frugalml trial (see the module docstring).

    Args:
        trial: the trial your training function receives.
        rounds: ``num_boost_round`` (``n_estimators``), planned at once. Default: planned
            in LightGBM's first round, which a trial killed while LightGBM builds its
            booster (allocating its histogram pool) never reaches.
        data_name: the validation set reported as ``val_loss``; default: the last one
            that is not the training data (``valid_0`` with one ``eval_set``).
        metric_name: the metric reported as ``val_loss``; default: that set's last
            lower-is-better metric.
    """

    def __init__(self, trial: Any, *, rounds: int | None = None, data_name: str | None = None,
                 metric_name: str | None = None) -> None:
        self.trial = require_trial(trial, "FrugalmlCallback")
        self.planned = None if rounds is None else check("FrugalmlCallback", "rounds", rounds, POSITIVE_INT)
        self.data_name, self.metric_name = data_name, metric_name
        self._n_samples = 1
        if self.planned is not None:
            self.trial.plan(self.planned)
        self.trial.reset_clock()  # LightGBM has no hook before its first round: set-up ends here

    def __call__(self, env: Any) -> None:
        trial = self.trial
        if env.iteration == env.begin_iteration:
            if self.planned != env.end_iteration - env.begin_iteration:  # LightGBM's count is the one that runs
                self.planned = env.end_iteration - env.begin_iteration
                trial.plan(self.planned)
            self._n_samples = _rows(env.model)
        results = env.evaluation_result_list or ()
        train = _by_name(results, _train_name(env.model))
        metric = self._loss_name(train) if train else None
        loss = train[metric][0] if metric else math.nan
        if trial.step(loss, self._n_samples) or env.iteration + 1 == env.end_iteration:
            trial.report(**self._metrics(env.model, results))

    def _metrics(self, model: Any, results: Any) -> dict[str, float]:
        names = [r[0] for r in results if r[0] not in TRAIN and r[0] != _train_name(model)]
        name = self.data_name or (names[-1] if names else None)
        if name is None:
            return {}
        values = _by_name(results, name)
        if not values:
            raise TrialUsageError(f"FrugalmlCallback(data_name={name!r}) names no validation set; the sets are "
                                  f"{sorted({r[0] for r in results})}.")
        metrics = {metric: value for metric, (value, _) in values.items()}
        chosen = self._loss_name(values)
        if chosen is not None:
            metrics[VAL_LOSS] = metrics[chosen]
        error = next((m for m in _ERROR if m in values), None)
        if error is not None:
            metrics[ACCURACY] = 1.0 - metrics[error]
        return metrics

    def _loss_name(self, values: dict[str, tuple[float, bool]]) -> str | None:
        if self.metric_name is not None:
            if self.metric_name not in values:
                raise TrialUsageError(f"FrugalmlCallback(metric_name={self.metric_name!r}) is not among the "
                                      f"metrics LightGBM evaluates: {sorted(values)}.")
            return self.metric_name
        losses = [metric for metric, (_, higher_is_better) in values.items() if not higher_is_better]
        return losses[-1] if losses else None


def _by_name(results: Any, name: str) -> dict[str, tuple[float, bool]]:
    """``{metric: (value, higher_is_better)}`` of one dataset in an evaluation list (train or cv)."""
    return {r[1]: (float(r[2]), bool(r[3])) for r in results if r[0] == name}


def _train_name(model: Any) -> str:
    return getattr(model, "_train_data_name", "training")


def _rows(model: Any) -> int:
    """Training rows per round: the training set's, summed over the folds of ``lgb.cv``."""
    try:
        return max(1, sum(int(b.train_set.num_data()) for b in getattr(model, "boosters", [model])))
    except Exception:  # noqa: BLE001 - no training data attached (a loaded model): count rounds
        return 1
