"""XGBoost: one boosting round is one frugalml step.

:class:`FrugalmlCallback` is an ``xgboost.callback.TrainingCallback`` for ``xgb.train``,
``xgb.cv`` and the scikit-learn API (``XGBClassifier(callbacks=[...])``). Each round it
calls ``trial.step`` with the training loss (when the evals log has a ``"train"`` set)
and, when a window ends, ``trial.report`` with the validation metric as ``val_loss``
(``accuracy`` too with the ``error``/``merror`` metric, and every metric of that set
under its own name). XGBoost tells a callback neither the number of rounds nor the
training rows, so pass ``rounds`` (it becomes ``trial.plan``) and ``n_samples``.

Example::

    import xgboost as xgb
    from frugalml.integrations.xgboost import FrugalmlCallback

    def train(trial, rounds=200):
        dtrain, dval = xgb.DMatrix(X, y), xgb.DMatrix(X_val, y_val)
        booster = xgb.train({"max_depth": trial.params["max_depth"]}, dtrain, num_boost_round=rounds,
                            evals=[(dtrain, "train"), (dval, "val")],
                            callbacks=[FrugalmlCallback(trial, rounds=rounds, n_samples=len(X))])
        trial.log_model(booster)

Budgets are enforced by frugalml.tune's watchdog from outside the process, mid-round
if need be. When the in-process executor raises a stop inside ``trial.step``/``report``,
the callback ends training XGBoost's way (``after_iteration`` returns True, and XGBoost
goes on to ``after_training``) and raises the stop again from its own ``after_training``, so the trial is recorded as stopped instead of the code after
``xgb.train`` logging a half-trained model as if it were done.
Cost per round: ``trial.step`` plus reading the last value of each metric (1-3 us more
than the step; benchmarks/adapter_overhead_boosting.py).
"""

from __future__ import annotations

import math
from typing import Any

from frugalml.exceptions import TrialUsageError
from frugalml.integrations._frameworks import is_stop, require, require_trial
from frugalml.metrics import ACCURACY, VAL_LOSS
from frugalml.validation import POSITIVE_INT, check

xgboost = require("xgboost", "2.0", "xgboost")

__all__ = ["FrugalmlCallback"]

TRAIN = "train"  # the evals name XGBoost's own examples (and xgb.cv) give the training data
# XGBoost's EarlyStopping treats these metrics as higher-is-better (callback.py)
_MAXIMIZE = ("auc", "aucpr", "pre", "pre@", "map", "ndcg", "auc@", "aucpr@", "map@", "ndcg@")
_ERROR = ("error", "merror")  # 1 - error is the accuracy


class FrugalmlCallback(xgboost.callback.TrainingCallback):
    """Reports each boosting round to a frugalml trial (see the module docstring).

    Args:
        trial: the trial your training function receives.
        rounds: ``num_boost_round`` (``n_estimators`` with the scikit-learn API); planned
            with ``trial.plan`` so compute saved and predicted stops work. None: not planned
            (unless ``Workload(steps=...)`` planned it).
        n_samples: training rows per round (``len(X)``), for throughput; default 1.
        data_name: the evals set reported as ``val_loss``; default: the last one not
            named ``"train"`` (XGBoost's ``EarlyStopping`` also watches the last set).
        metric_name: the metric reported as ``val_loss``; default: that set's last
            lower-is-better metric.
    """

    def __init__(self, trial: Any, *, rounds: int | None = None, n_samples: int = 1,
                 data_name: str | None = None, metric_name: str | None = None) -> None:
        super().__init__()
        self.trial = require_trial(trial, "FrugalmlCallback")
        self.rounds = None if rounds is None else check("FrugalmlCallback", "rounds", rounds, POSITIVE_INT)
        self.n_samples = check("FrugalmlCallback", "n_samples", n_samples, POSITIVE_INT)
        self.data_name, self.metric_name = data_name, metric_name
        self._stop: BaseException | None = None
        self._pending: dict | None = None  # the evals log of steps not yet reported

    def before_training(self, model: Any) -> Any:
        if self.trial is None:
            raise _unpickled()
        self._stop = self._pending = None
        if self.rounds is not None:
            self.trial.plan(self.rounds)
        self.trial.reset_clock()  # building the booster and its data is set-up, not round 1
        return model

    def after_iteration(self, model: Any, epoch: int, evals_log: dict) -> bool:
        try:
            train = evals_log.get(TRAIN)
            loss = _last(train.get(self.metric_name) or next(reversed(train.values()))) if train else math.nan
            if self.trial.step(loss, self.n_samples):
                self._pending = None
                self.trial.report(**self._metrics(evals_log))
            else:
                self._pending = evals_log
        except BaseException as error:
            if not is_stop(error):
                raise
            self._stop = error  # end XGBoost's loop its own way; raised again from after_training
            return True
        return False

    def after_training(self, model: Any) -> Any:
        stop, self._stop = self._stop, None
        if stop is not None:
            raise stop
        if self._pending is not None:  # the last, partial window gets the final metrics too
            pending, self._pending = self._pending, None
            self.trial.report(**self._metrics(pending))
        return model

    def _metrics(self, evals_log: dict) -> dict[str, float]:
        names = [name for name in evals_log if name != TRAIN]
        name = self.data_name or (names[-1] if names else None)
        if name is None:
            return {}
        if name not in evals_log:
            raise TrialUsageError(f"FrugalmlCallback(data_name={name!r}) names no evals set; the sets are "
                                  f"{sorted(evals_log)}.")
        values = {metric: _last(history) for metric, history in evals_log[name].items()}
        metrics = dict(values)
        if self.metric_name is not None and self.metric_name not in values:
            raise TrialUsageError(f"FrugalmlCallback(metric_name={self.metric_name!r}) is no metric of {name!r}; "
                                  f"its metrics are {sorted(values)}.")
        losses = [m for m in values if m != "mape" and not m.startswith(_MAXIMIZE)]
        chosen = self.metric_name or (losses[-1] if losses else None)
        if chosen is not None:
            metrics[VAL_LOSS] = values[chosen]
        error = next((m for m in _ERROR if m in values), None)
        if error is not None:
            metrics[ACCURACY] = 1.0 - values[error]
        return metrics

    def __getstate__(self) -> dict:
        # the trial (a pipe and shared memory) stays in its process: a model pickled with
        # its callbacks (XGBClassifier(callbacks=[...]) via trial.log_model) carries none
        return {**self.__dict__, "trial": None, "_stop": None, "_pending": None}

    def __deepcopy__(self, memo: dict) -> FrugalmlCallback:
        # scikit-learn's clone deep-copies callbacks: the copy reports to the same trial
        copied = object.__new__(type(self))
        copied.__dict__.update(self.__dict__, _stop=None, _pending=None)
        return copied



def _last(history: list) -> float:
    value = history[-1]
    return float(value[0] if isinstance(value, tuple) else value)  # xgb.cv logs (mean, std)


def _unpickled() -> TrialUsageError:
    return TrialUsageError("this FrugalmlCallback was copied out of its trial's process (pickled) and has no trial; "
                  "create FrugalmlCallback(trial) inside the training function.")
