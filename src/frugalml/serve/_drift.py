"""Drift of one window of inputs and predictions against the training reference.

* PSI (population stability index) over the reference's quantile bins:
  ``sum((a - e) * ln(a / e))``, shares clipped at ``1e-4`` so an empty bin stays finite.
  Rule of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 large. PSI of a small window
  is biased upwards (about ``(bins - 1) / n`` under no drift), so prefer windows of a
  few hundred rows or rely on the KS test.
* Two-sample Kolmogorov–Smirnov against the reference sample (asymptotic p-value).
  A feature counts as drifted when its p-value is below ``ks_alpha``
  divided by the number of features (Bonferroni, so the chance of a false alarm in
  a window stays near ``ks_alpha``), or when its PSI is above ``psi_threshold``.
* A categorical (text) feature has no order, so KS does not apply: its test is Pearson's
  chi-squared over the category counts (training vs window, a category unseen in training
  in a bin of its own), whose p-value takes the KS p-value's place; the statistic in the KS
  statistic's place is the total variation distance, the largest change in share over any
  set of categories (KS's sup over half-lines, taken over all sets). Its PSI is over categories.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from frugalml.serve._reference import FeatureReference, Reference, proportions

_FLOOR = 1e-4


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index between two vectors of bin shares."""
    e = np.clip(np.asarray(expected, dtype=np.float64), _FLOOR, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), _FLOOR, None)
    return float(np.sum((a - e) * np.log(a / e)))


def feature_psi(reference: FeatureReference, values: np.ndarray) -> float:
    return psi(np.asarray(reference.proportions), proportions(values, np.asarray(reference.edges)))


def ks(reference_sample: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov statistic and asymptotic p-value.

    ``reference_sample`` must be sorted (the reference stores it so). Same statistic
    as ``scipy.stats.ks_2samp``, about ten times faster for a few hundred values;
    the p-value is the Kolmogorov limit ``kolmogorov(sqrt(n m / (n + m)) D)``.
    """
    from scipy.special import kolmogorov

    n, m = len(reference_sample), len(values)
    if n == 0 or m == 0:
        return 0.0, 1.0
    values = np.sort(values)
    grid = np.concatenate([reference_sample, values])
    gap = np.searchsorted(reference_sample, grid, side="right") / n - np.searchsorted(values, grid, side="right") / m
    statistic = float(np.max(np.abs(gap)))
    return statistic, float(kolmogorov(np.sqrt(n * m / (n + m)) * statistic))


def chi_squared(reference: FeatureReference, n_reference: int, values: np.ndarray) -> tuple[float, float]:
    """Total variation distance between the category shares, and the chi-squared test's p-value.

    The test is of homogeneity between the training counts (``n_reference`` rows in the
    reference's bins) and the window's counts; bins empty in both are left out.
    """
    from scipy.special import chdtrc

    m = len(values)
    if m == 0 or n_reference == 0:
        return 0.0, 1.0
    expected = np.asarray(reference.proportions, dtype=np.float64)
    shares = proportions(values, np.asarray(reference.edges))
    distance = float(0.5 * np.abs(shares - expected).sum())
    table = np.vstack([expected * n_reference, shares * m])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return distance, 1.0
    independent = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
    statistic = float(((table - independent) ** 2 / independent).sum())
    return distance, float(chdtrc(table.shape[1] - 1, statistic))


class FeatureDrift(NamedTuple):
    name: str
    psi: float
    ks: float
    ks_pvalue: float
    drifted: bool


class WindowDrift(NamedTuple):
    """Drift of one window: per feature, and of the predictions."""

    rows: int
    features: tuple[FeatureDrift, ...]
    prediction_psi: float
    prediction_ks: float | None  # regression only

    @property
    def drifted(self) -> int:
        return sum(f.drifted for f in self.features)


def window_drift(
    reference: Reference, X: np.ndarray, predictions: np.ndarray, *, psi_threshold: float, ks_alpha: float,
    between_features: Callable[[], None] | None = None,
) -> WindowDrift:
    """Compare a window of finite input rows ``X`` and its ``predictions`` with ``reference``.

    ``between_features`` is called after each feature (the monitor passes ``time.sleep(0)``
    so a server's event loop gets the GIL between features).
    """
    alpha = ks_alpha / max(1, len(reference.features))
    features = []
    for j, ref in enumerate(reference.features):
        if between_features is not None and j:
            between_features()
        column = X[:, j]
        score = feature_psi(ref, column)
        if ref.categorical:
            statistic, pvalue = chi_squared(ref, reference.n_train, column)
        else:
            statistic, pvalue = ks(np.asarray(ref.sample), column)
        features.append(FeatureDrift(ref.name, score, statistic, pvalue, score > psi_threshold or pvalue < alpha))
    prediction_ks = None
    if reference.prediction is not None:
        values = np.asarray(predictions, dtype=np.float64)
        values = values[np.isfinite(values)]
        prediction_psi = feature_psi(reference.prediction, values)
        prediction_ks = ks(np.asarray(reference.prediction.sample), values)[0]
    else:
        codes = np.searchsorted(np.asarray(reference.classes), np.asarray(predictions).astype(str))
        shares = np.bincount(codes, minlength=len(reference.classes))[: len(reference.classes)] / max(1, len(codes))
        prediction_psi = psi(np.asarray(reference.class_proportions), shares)
    return WindowDrift(len(X), tuple(features), prediction_psi, prediction_ks)
