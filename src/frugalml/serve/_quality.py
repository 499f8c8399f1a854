"""Prediction ids, and model quality once labels come back (per window and per slice).

Ids are ``<server prefix>-<row number>``: issuing a batch of ids is one counter
update, and the prediction behind an id is found by bisecting the kept batches, so
the request path never builds a per-row dict.
"""

from __future__ import annotations

import bisect
import math
import secrets
import threading
from collections import deque
from typing import Any, Mapping

import numpy as np

from frugalml.exceptions import FrugalError
from frugalml.validation import printable


class FeedbackError(FrugalError, ValueError):
    """A feedback label that cannot be used (unknown id, wrong label type, too many slices)."""


class DuplicateFeedback(FeedbackError):
    """A second label for a prediction id: feedback is idempotent by refusing it (the first label counts)."""


class PredictionLog:
    """Issues prediction ids and keeps the latest ``capacity`` predictions for feedback."""

    def __init__(self, capacity: int = 100_000, prefix: str | None = None) -> None:
        self.capacity = capacity
        self.prefix = secrets.token_hex(4) if prefix is None else prefix
        self._next = 0
        self._starts: deque[int] = deque()
        self._batches: deque[np.ndarray] = deque()
        self._kept = 0
        self._labelled: set[int] = set()  # rows that got their label (pruned with the kept predictions)
        self._lock = threading.Lock()

    def record(self, predictions: np.ndarray, keep: bool = True, first: int | None = None) -> list[str]:
        """Ids for a batch of predictions (kept for :meth:`get` when ``keep``); ``first``: the row
        number of the first, when another process issued the ids (never below the next one)."""
        n = len(predictions)
        with self._lock:
            first = self._next if first is None else max(first, self._next)
            self._next = first + n
            if keep:
                self._starts.append(first)
                self._batches.append(predictions)
                self._kept += n
                self._evict()
        prefix = self.prefix
        return [f"{prefix}-{i}" for i in range(first, first + n)]

    def resize(self, capacity: int) -> None:
        """Keep the latest ``capacity`` predictions from now on; ids issued so far stay valid."""
        with self._lock:
            self.capacity = capacity
            self._evict()

    def _evict(self) -> None:
        while self._batches and self._kept - len(self._batches[0]) >= self.capacity:
            self._kept -= len(self._batches.popleft())
            self._starts.popleft()
        if len(self._labelled) > self.capacity:  # labels of evicted rows: refused as too old anyway
            oldest = self._starts[0] if self._starts else self._next
            self._labelled = {row for row in self._labelled if row >= oldest}

    def _row(self, prediction_id: Any) -> int:
        prefix, _, number = str(prediction_id).rpartition("-")
        if prefix != self.prefix or not (number.isascii() and number.isdigit() and len(number) <= 18):
            raise FeedbackError(
                f"unknown prediction_id {prediction_id!r}: not issued by this server (or it restarted)."
            )
        return int(number)

    def check_unlabelled(self, prediction_id: Any) -> None:
        """:class:`DuplicateFeedback` when ``prediction_id`` already got its label."""
        if self._row(prediction_id) in self._labelled:
            raise DuplicateFeedback(f"prediction_id {str(prediction_id)[:60]!r} already has its label; feedback "
                                    "counts the first label of each prediction.")

    def mark_labelled(self, prediction_id: Any) -> None:
        with self._lock:
            self._labelled.add(self._row(prediction_id))
            self._evict()

    def get(self, prediction_id: Any) -> Any:
        """The prediction behind an id; :class:`FeedbackError` when unknown or evicted."""
        row = self._row(prediction_id)
        with self._lock:
            k = bisect.bisect_right(self._starts, row) - 1
            if k >= 0 and row - self._starts[k] < len(self._batches[k]):
                return self._batches[k][row - self._starts[k]]
        raise FeedbackError(f"prediction_id {prediction_id!r} is too old (only the latest {self.capacity} are kept).")


class QualityTracker:
    """Accuracy (classification) or RMSE (regression) over the latest ``window`` labels,
    overall and per slice value (``"group=a"``), plus the gap between slices of a key."""

    def __init__(self, task: str, classes: tuple[str, ...] = (), window: int = 200, max_slices: int = 50) -> None:
        self.task = task
        self.classes = set(classes)
        self.window = window
        self.max_slices = max_slices
        self.metric = "accuracy" if task == "classification" else "rmse"
        self.total = 0
        self._scores: dict[str, deque[float]] = {"": deque(maxlen=window)}
        self._lock = threading.Lock()

    def score(self, prediction: Any, label: Any) -> float:
        """1/0 for a correct/wrong class, the squared error for regression."""
        if self.task == "classification":
            if isinstance(label, (bool, dict, list)) or label is None or str(label) not in self.classes:
                raise FeedbackError(f"label must be one of the classes {sorted(self.classes)}. Got {label!r} instead.")
            return float(str(label) == str(prediction))
        if isinstance(label, bool) or not isinstance(label, (int, float)) or not math.isfinite(label):
            raise FeedbackError(f"label must be a finite number for a regression model. Got {label!r} instead.")
        return (float(prediction) - float(label)) ** 2

    def check_slice(self, slice_: Mapping[str, Any] | None) -> None:
        """Raise :class:`FeedbackError` for a malformed slice, before anything is recorded."""
        _slice(slice_)

    def add(self, prediction: Any, label: Any, slice_: Mapping[str, Any] | None = None) -> None:
        value = self.score(prediction, label)
        keys = [""] + [f"{k}={v}" for k, v in _slice(slice_).items()]
        with self._lock:
            new = [k for k in keys if k not in self._scores]
            if len(self._scores) - 1 + len(new) > self.max_slices:
                raise FeedbackError(f"too many distinct slices (max_slices={self.max_slices}); use fewer slice values.")
            for key in keys:
                self._scores.setdefault(key, deque(maxlen=self.window)).append(value)
            self.total += 1

    def values(self) -> dict[str, float]:
        """``quality.<metric>``, ``quality.<metric>.<key>=<value>`` and ``quality.<metric>_gap.<key>``."""
        out: dict[str, float] = {}
        by_key: dict[str, list[float]] = {}
        with self._lock:
            scores = {k: list(v) for k, v in self._scores.items() if v}
        for key, values in scores.items():
            mean = sum(values) / len(values)
            value = mean if self.task == "classification" else math.sqrt(mean)
            out[f"quality.{self.metric}" + (f".{key}" if key else "")] = value
            if key:
                by_key.setdefault(key.split("=", 1)[0], []).append(value)
        for key, values in by_key.items():
            if len(values) > 1:
                out[f"quality.{self.metric}_gap.{key}"] = max(values) - min(values)
        return out


def _slice(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > 8:
        raise FeedbackError(f"'slice' must be an object of at most 8 key: value pairs. Got {value!r} instead.")
    out = {}
    for key, item in value.items():
        if isinstance(item, (dict, list)) or item is None or not str(key).isidentifier():
            raise FeedbackError(f"slice {key!r}: keys must be identifiers and values strings or numbers.")
        text = str(item)[:64]
        if not printable(text):
            raise FeedbackError(f"slice {key!r}: the value must be printable text (no control characters or "
                                "lone surrogates); it becomes a Prometheus label.")
        out[str(key)] = text
    return out

