"""Feedback: check every item of a ``POST /feedback`` body, then count them all or none.

One function for the single-process server and for the monitor process of
``--workers N``, so both refuse the same bodies the same way.
"""

from __future__ import annotations

from typing import Any

from frugalml.serve._monitor import ServingMonitor
from frugalml.serve._quality import DuplicateFeedback, FeedbackError
from frugalml.serve._validate import RequestError


def accept_feedback(monitor: ServingMonitor, data: Any) -> int:
    """Count the labels in ``data`` (one item or a list); :class:`RequestError` (422 ``bad_feedback``,
    409 ``duplicate_feedback``) for the first unusable item, and then none is counted."""
    items = data if isinstance(data, list) else [data]
    resolved, seen = [], set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "prediction_id" not in item or "label" not in item:
            raise RequestError(422, "bad_feedback", f"item {i}: feedback needs 'prediction_id' and 'label' "
                                                    "(and optionally 'slice': {key: value}).")
        try:
            prediction = monitor.log.get(item["prediction_id"])
            if str(item["prediction_id"]) in seen:
                raise DuplicateFeedback(f"prediction_id {str(item['prediction_id'])[:60]!r} appears twice in "
                                        "this request; send one label per prediction.")
            monitor.log.check_unlabelled(item["prediction_id"])
            seen.add(str(item["prediction_id"]))
            monitor.quality.score(prediction, item["label"])
            monitor.quality.check_slice(item.get("slice"))
        except DuplicateFeedback as error:
            raise RequestError(409, "duplicate_feedback", f"item {i}: {error}") from None
        except FeedbackError as error:
            raise RequestError(422, "bad_feedback", f"item {i}: {error}") from None
        resolved.append(item)
    try:  # all items checked: only a full slice table can refuse one now
        for item in resolved:
            monitor.feedback(item["prediction_id"], item["label"], item.get("slice"))
    except FeedbackError as error:
        raise RequestError(422, "bad_feedback", str(error)) from None
    return len(resolved)
