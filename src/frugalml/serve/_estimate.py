"""Quality before labels arrive: a classifier's expected accuracy from its own confidence.

Confidence-based performance estimation (CBPE, as in NannyML): if the model's
probabilities are calibrated, the chance that a prediction is right is its
confidence (the highest class probability), so a window's expected accuracy is the
mean confidence of its predictions. Raw scores are rarely calibrated, so the
confidence is first mapped through a histogram-binning calibrator fitted on the
reference data (Zadrozny & Elkan, 2001): per confidence bin, the share of reference
predictions that were right. The calibrator's expected calibration error (ECE, Guo
et al., 2017) of the raw scores is kept as the calibration check: a large one says
the raw confidences were far off, and the estimate leans on the calibrator.

Example:
    >>> import numpy as np
    >>> calibration = Calibration.fit(np.array([0.6, 0.7, 0.9, 0.95]), np.array([True, False, True, True]), bins=2)
    >>> round(calibration.expected_accuracy(np.array([0.65, 0.92])), 3)
    0.75
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Calibration:
    """Per confidence bin (``(edges[i], edges[i+1]]``), the share of reference predictions that were right."""

    edges: tuple[float, ...]
    accuracy: tuple[float, ...]
    counts: tuple[int, ...]
    ece: float  # expected calibration error of the raw confidences on the reference data
    reference_accuracy: float

    @classmethod
    def fit(cls, confidence: np.ndarray, correct: np.ndarray, *, bins: int = 10) -> Calibration:
        """Equal-frequency bins of ``confidence``; ``correct`` says which predictions were right."""
        confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=bool)
        inner = np.unique(np.quantile(confidence, np.linspace(0, 1, bins + 1)[1:-1])) if bins > 1 else np.array([])
        edges = np.concatenate([[0.0], inner, [1.0]])
        which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, len(edges) - 2)
        counts = np.bincount(which, minlength=len(edges) - 1)
        hits = np.bincount(which, weights=correct, minlength=len(edges) - 1)
        mean_confidence = np.bincount(which, weights=confidence, minlength=len(edges) - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            accuracy = np.where(counts > 0, hits / counts, np.nan)
            gaps = np.where(counts > 0, np.abs(hits - mean_confidence) / np.maximum(counts, 1), 0.0)
        ece = float((gaps * counts).sum() / max(1, counts.sum()))
        return cls(tuple(edges.tolist()), tuple(accuracy.tolist()), tuple(int(c) for c in counts), ece,
                   float(correct.mean()) if len(correct) else float("nan"))

    def expected_accuracy(self, confidence: np.ndarray) -> float:
        """The mean calibrated chance of being right, over ``confidence`` (a window's predictions)."""
        confidence = np.asarray(confidence, dtype=np.float64)
        edges = np.asarray(self.edges)
        which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, len(edges) - 2)
        accuracy = np.asarray(self.accuracy)[which]
        return float(np.where(np.isnan(accuracy), confidence, accuracy).mean())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(tuple(data["edges"]), tuple(data["accuracy"]), tuple(data["counts"]), float(data["ece"]),
                   float(data["reference_accuracy"]))


def class_probabilities(model: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Predictions, their confidence and all class probabilities from ``model.predict_proba`` (one
    call, read against ``model.classes_``), or None for a model without them."""
    predict_proba = getattr(model, "predict_proba", None)
    if predict_proba is None:
        return None
    proba = predict_proba(X)
    classes = getattr(model, "classes_", None)  # after the call: a network's are known once it answered
    if proba is None or classes is None:
        return None
    proba = np.asarray(proba)
    if proba.ndim != 2 or proba.shape[1] != len(classes):
        return None
    best = proba.argmax(axis=1)
    return np.asarray(classes)[best], proba[np.arange(len(proba)), best], proba


def confidences(model: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Predictions and their confidence from ``model.predict_proba`` (one call), or None without it."""
    scored = class_probabilities(model, X)
    return None if scored is None else scored[:2]
