"""Cross-configuration cost model: a configuration's step time, memory and CPU before it runs.

The thesis found that system cost depends on the batch and the dataset's shape, not
on the learning rate. A batch of ``b`` rows of a dataset with ``f`` features is
``min(b, n_train) * f * 8 / 2**20`` MB of float64 ("batch MB"); each metric is
modelled as linear in it::

    metric = a + c * batch_mb      (+ c_j * value of any other numeric feature named)

which reads physically: a fixed cost (the worker, the model) plus a cost per batch
byte (copies, arithmetic). The fit is weighted least squares on relative errors
(weights ``1 / y**2``), because costs span orders of magnitude between batch sizes.
The prediction interval is the textbook one for that model (Student t with
``n - p`` degrees of freedom, the new point's leverage included), with a floor of
``MIN_RELATIVE_SPREAD`` on the residual spread so a lucky, perfect fit is not
taken as certainty.

A network's costs depend on its architecture, which no single hyperparameter says:
``derive`` turns a configuration into derived features (for the built-in networks,
``weights_mb``, ``activations_mb`` and ``gflops`` computed from the module, see
:func:`frugalml.workloads.network_features`), and ``features`` may name them like
parameters. Memory is then weights + activations, step time FLOPs + optimiser
traffic, each with a fixed part. Features the observations cannot tell apart (a
batch size never varied, so activations and FLOPs move together) are dropped from
that fit, in the order given, rather than making it singular; a configuration
where such a feature no longer follows the others is then not predicted.

Observations come from finished and stopped trials. A trial stopped for breaking a
budget only shows a lower bound of the cost it broke (it was killed on the way up),
so that cost is left out of the fit; its other costs count.

Example:
    >>> shape = DatasetShape(n_train=49000, n_features=784)
    >>> model = CostModel(min_observations=3).fit(records, shape)                          # doctest: +SKIP
    >>> model.predict({"batch_size": 30000, "learning_rate": 0.01})["peak_memory_mb"]                   # doctest: +SKIP
    Estimate(value=298.1, low=281.0, high=315.2)
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from frugalml.accounting import measured_rate
from frugalml.budgets import BUDGETS, SAMPLE, SERVE, WINDOW, budget_of_rule
from frugalml.exceptions import ConfigError
from frugalml.metrics import CPU_MS_PER_STEP, MEAN_STEP_MS
from frugalml.validation import Interval, check
from frugalml.prediction._estimate import Estimate, check_confidence
from frugalml.records import TrialRecord, TrialStatus
from frugalml.units import to_mb

# budget key -> the predicted metric it limits (trial seconds: derived from step time by the screen)
PREDICTED_METRICS = {key: b.predicted for key, b in BUDGETS.items() if b.predicted is not None}
# what the model fits: each measured budget's metric, and CPU per step (for compute accounting)
METRICS = (*(b.predicted for b in BUDGETS.values() if b.scope in (SAMPLE, WINDOW, SERVE) and b.predicted),
           CPU_MS_PER_STEP)
MIN_RELATIVE_SPREAD = 0.03


class DatasetShape(NamedTuple):
    """The training split's shape; None where unknown (a user's own training function)."""

    n_train: int | None = None
    n_features: int | None = None


def steady_step_ms(record: TrialRecord) -> float | None:
    """The trial's steady step time: median window mean after the first (warm-up) window."""
    means = [w.values[MEAN_STEP_MS] for w in record.windows if math.isfinite(w.values.get(MEAN_STEP_MS, math.nan))]
    if not means:
        return None
    return statistics.median(means[1:] if len(means) > 1 else means)


def broken_metric(record: TrialRecord) -> str | None:
    """The metric whose budget stopped or skipped ``record`` (its measured value is censored). A
    serving cost is measured whole, on the model, so a serving stop censors nothing."""
    if record.stop is None or not record.stop.is_system:
        return None
    budget = budget_of_rule(record.stop.rule)
    return budget.predicted if budget is not None and budget.scope != SERVE else None


def serving_costs(record: TrialRecord) -> dict[str, float]:
    """What :mod:`frugalml.deploy` measured of the trial's model, by predicted metric (a
    configuration skipped on its pre-training measurement has these, and nothing else)."""
    return {b.predicted: value for b in BUDGETS.values()
            if b.scope == SERVE and b.predicted and (value := record.serving(b.metric)) is not None and value > 0}


def observed_costs(record: TrialRecord) -> dict[str, float]:
    """The costs a trial measured: steady step time, the peak of each sampled budget metric
    (memory, GPU memory; a running total such as joules only from a completed trial),
    CPU-ms per step, and what its model costs to serve where that was measured."""
    costs: dict[str, float] = {}
    if (step := steady_step_ms(record)) is not None and step > 0:
        costs[MEAN_STEP_MS] = step
    for b in BUDGETS.values():
        if b.cumulative and record.status is not TrialStatus.COMPLETED:
            continue  # a running total of a trial that stopped early is part of the whole
        if b.scope == SAMPLE and (peak := record.peak(b.metric)) is not None and math.isfinite(peak) and peak > 0:
            costs[b.predicted] = peak
    if (rate := measured_rate(record)) is not None:  # steady, evaluation included: set-up left out
        costs[CPU_MS_PER_STEP] = rate.cpu_s * 1000.0
    return {**costs, **serving_costs(record)}


@dataclass(frozen=True)
class _Fit:
    beta: np.ndarray  # 0 for the columns the observations could not tell apart
    covariance: np.ndarray  # of beta
    sigma: float  # relative residual spread
    dof: int
    n: int
    kept: tuple[int, ...] = ()  # the columns fitted
    span: tuple[tuple[float, float], ...] = ()  # per column: the smallest and largest value observed
    # per dropped column: (index, its coefficients on the kept columns, the column's scale)
    dropped: tuple[tuple[int, np.ndarray, float], ...] = ()


class CostModel:
    """Predicts a configuration's costs from its hyperparameters and the dataset's shape.

    Args:
        features: numeric parameters the cost depends on; ``batch_size`` enters as
            batch MB (clamped to the training split) when the shape is known.
        min_observations: trials needed before the model predicts anything.
        confidence: one-sided confidence of the predicted bounds.
        derive: returns derived features of a configuration (``{}`` when it cannot
            tell); a feature is looked up there before the configuration itself.
    """

    def __init__(self, features: Sequence[str] = ("batch_size",), *, min_observations: int = 4,
                 confidence: float = 0.9,
                 derive: Callable[[Mapping[str, Any]], Mapping[str, float]] | None = None) -> None:
        if isinstance(features, str) or not features or not all(isinstance(f, str) for f in features):
            raise ConfigError(
                f"The 'features' parameter of CostModel must be a non-empty list of names. Got {features!r} instead."
            )
        check("CostModel", "min_observations", min_observations, Interval(int, 2, None))
        self.features = tuple(features)
        self.min_observations = min_observations
        self.confidence = check_confidence("CostModel", confidence)
        self.derive = derive

    def design(self, params: Mapping[str, Any]) -> list[float] | None:
        """The regressors of a configuration: [1, feature values...]; None if one is missing."""
        shape = getattr(self, "shape_", DatasetShape())
        derived = self.derive(params) if self.derive is not None else {}
        row = [1.0]
        for name in self.features:
            value = derived.get(name, params.get(name))
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return None
            if name == "batch_size" and shape.n_features:
                rows = min(value, shape.n_train) if shape.n_train else value
                value = to_mb(rows * shape.n_features * 8)
            row.append(float(value))
        return row

    def fit(self, records: Sequence[TrialRecord], shape: DatasetShape = DatasetShape()) -> CostModel:
        """Fit on the trials that ran (completed or stopped); others are ignored."""
        self.shape_ = shape
        self.fits_: dict[str, _Fit] = {}
        rows: dict[str, tuple[list[list[float]], list[float]]] = {m: ([], []) for m in METRICS}
        used = 0
        for record in records:
            ran = record.status in (TrialStatus.COMPLETED, TrialStatus.STOPPED)
            if not ran and not serving_costs(record):
                continue
            x = self.design(record.params)
            if x is None:
                continue
            used += 1
            censored = broken_metric(record)
            for metric, value in (observed_costs(record) if ran else serving_costs(record)).items():
                if metric == censored:
                    continue
                rows[metric][0].append(x)
                rows[metric][1].append(value)
        self.n_observations_ = used
        # per metric: the design rows and the measured values it was fitted on (censored ones left out)
        self.observations_ = {m: (np.array(X, dtype=float), np.array(y, dtype=float)) for m, (X, y) in rows.items() if y}
        for metric, (X, y) in self.observations_.items():
            if len(y) < self.min_observations:
                continue
            fit = self._fit(X, y)
            if fit is not None:
                self.fits_[metric] = fit
        return self

    @staticmethod
    def _fit(X: np.ndarray, y: np.ndarray) -> _Fit | None:
        n = X.shape[0]
        kept = _independent_columns(X)
        p = len(kept)
        if n - p < 1:
            return None
        sqrt_w = 1.0 / y
        Xw, yw = X[:, kept] * sqrt_w[:, None], y * sqrt_w
        coefficients, *_ = np.linalg.lstsq(Xw, yw, rcond=None)
        residual = yw - Xw @ coefficients
        sigma = max(math.sqrt(float(residual @ residual) / (n - p)), MIN_RELATIVE_SPREAD)
        beta, covariance = np.zeros(X.shape[1]), np.zeros((X.shape[1], X.shape[1]))
        beta[kept] = coefficients
        covariance[np.ix_(kept, kept)] = sigma**2 * np.linalg.pinv(Xw.T @ Xw)
        # how each dropped column followed the kept ones here: a query that breaks it is unseen ground
        dropped = tuple((j, np.linalg.lstsq(X[:, kept], X[:, j], rcond=None)[0], float(np.abs(X[:, j]).max()) or 1.0)
                        for j in range(X.shape[1]) if j not in kept)
        span = tuple((float(X[:, j].min()), float(X[:, j].max())) for j in range(X.shape[1]))
        return _Fit(beta, covariance, sigma, n - p, n, tuple(kept), dropped=dropped, span=span)

    def predict(self, params: Mapping[str, Any]) -> dict[str, Estimate]:
        """Predicted costs of ``params`` (metrics the model cannot predict yet are left out)."""
        from scipy.stats import t as student_t

        x = self.design(params)
        if x is None:
            return {}
        x0 = np.array(x)
        predictions = {}
        for metric, fit in self.fits_.items():
            if any(abs(float(x0[list(fit.kept)] @ c) - x0[j]) > 1e-6 * scale for j, c, scale in fit.dropped):
                continue  # a feature the observations never varied apart from the others varies here
            value = float(x0 @ fit.beta)
            if value <= 0:
                continue  # extrapolated below zero: the linear form does not hold there
            se = math.sqrt(fit.sigma**2 * value**2 + float(x0 @ fit.covariance @ x0))
            t = float(student_t.ppf(self.confidence, fit.dof))
            predictions[metric] = Estimate(value, max(0.0, value - t * se), value + t * se)
        return predictions

    def reach(self, params: Mapping[str, Any], metric: str) -> float:
        """How far outside the observations ``metric`` was fitted on ``params`` lies: the largest
        factor by which a cost feature exceeds the largest value observed (or falls short of the
        smallest); 1.0 inside the range, ``inf`` when the model cannot tell."""
        x, fit = self.design(params), getattr(self, "fits_", {}).get(metric)
        if x is None or fit is None:
            return math.inf
        factors = [1.0]
        for value, (low, high) in zip(x[1:], fit.span[1:]):
            if high > 0 and value > high:
                factors.append(value / high)
            elif low > 0 and 0 < value < low:
                factors.append(low / value)
            elif value <= 0 < low:
                factors.append(math.inf)
        return max(factors)

    @property
    def ready(self) -> bool:
        return bool(getattr(self, "fits_", None))


def _independent_columns(X: np.ndarray) -> list[int]:
    """The columns of ``X``, in order, that are not linear combinations of those before them
    (judged on columns scaled to a maximum of 1, so a feature's unit does not matter)."""
    scale = np.abs(X).max(axis=0)
    scaled = X / np.where(scale > 0, scale, 1.0)
    kept: list[int] = []
    for j in range(X.shape[1]):
        if scale[j] > 0 and np.linalg.matrix_rank(scaled[:, [*kept, j]], tol=1e-8 * math.sqrt(X.shape[0])) > len(kept):
            kept.append(j)
    return kept
