"""Parse and validate request bodies against the training schema (no HTTP objects here).

Every problem raises :class:`RequestError` with an HTTP status, a short ``kind``
(the label of ``frugalml_errors_total``) and a one-line message that says what was
wrong and what the model expects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from frugalml.serve._reference import Reference

_NUMBERS = {int, float}
_TEXT = {str, int}  # an integer category (a CSV cell "3") is its text
_SHOWN = 8


# Every kind of refused or failed request, the ``kind`` of the JSON error and the label of
# ``frugalml_errors_total`` (pre-created at 0, so rate() sees the first errors of a kind).
ERROR_KINDS = (
    "bad_json", "bad_request", "bad_config", "bad_feedback", "wrong_count", "wrong_features", "wrong_type",
    "nonfinite", "too_large", "too_many_rows", "body_timeout", "client_disconnected", "unsupported_media_type",
    "unauthorized", "forbidden", "rate_limited", "monitoring_disabled", "duplicate_feedback", "model_load", "model_error", "not_found",
    "method_not_allowed", "http_error", "internal", "not_supported",
)


class RequestError(Exception):
    """A request the server refuses: ``status`` (4xx), ``kind`` (one of ``ERROR_KINDS``) and a one-line message."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        assert kind in ERROR_KINDS, kind
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _SHOWN else "")


def _type_name(value: Any) -> str:
    return {str: "a string", bool: "a boolean", type(None): "null", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except json.JSONDecodeError as error:  # its own words, not the exception's text
        raise RequestError(400, "bad_json", f"request body is not valid JSON: {error.msg} at line {error.lineno} "
                                            f"column {error.colno}.") from None
    except UnicodeDecodeError as error:
        raise RequestError(400, "bad_json", f"request body is not valid JSON: not UTF-8 text at byte "
                                            f"{error.start}.") from None
    except ValueError:  # an integer of more than 4300 digits
        raise RequestError(400, "bad_json", "request body is not valid JSON: a number has too many digits.") \
            from None
    except RecursionError:
        raise RequestError(400, "bad_json", "request body is not valid JSON: nested too deeply.") from None


@dataclass(frozen=True)
class MixedRows:
    """Rows of a model with text (categorical) features: ``raw`` (an object array) is what the model
    takes; ``codes`` (float64, categories as their codes) is what monitoring sees."""

    codes: np.ndarray
    raw: np.ndarray


def _check_row_types(row: Sequence[Any], i: int, names: Sequence[str], text: Sequence[bool] = ()) -> None:
    if not text and set(map(type, row)) <= _NUMBERS:
        return
    for name, value, is_text in zip(names, row, text or [False] * len(names)):
        if is_text and type(value) not in _TEXT:
            raise RequestError(422, "wrong_type", f"row {i} feature {name!r} must be text (a category), got "
                                                  f"{_type_name(value)} ({json.dumps(value)[:40]}).")
        if not is_text and type(value) not in _NUMBERS:
            raise RequestError(422, "wrong_type", f"row {i} feature {name!r} must be a number, got {_type_name(value)} "
                                                  f"({json.dumps(value)[:40]}).")


def _from_rows(rows: list[Any], names: tuple[str, ...], text: tuple[bool, ...]) -> list[list[Any]]:
    expected = set(names)
    values = []
    for i, row in enumerate(rows):
        if type(row) is not dict:
            raise RequestError(422, "bad_request",
                               f"'rows' must hold objects (feature: value); row {i} is {_type_name(row)}.")
        if row.keys() != expected:
            missing = [n for n in names if n not in row]
            unknown = [str(k) for k in row if k not in expected]
            what = "; ".join(p for p in (f"lacks {_names(missing)}" if missing else "",
                                         f"has unknown {_names(unknown)}" if unknown else "") if p)
            raise RequestError(422, "wrong_features", f"row {i} {what}; the model takes: {_names(list(names))}.")
        row_values = [row[n] for n in names]
        _check_row_types(row_values, i, names, text)
        values.append(row_values)
    return values


def _from_instances(instances: list[Any], names: tuple[str, ...], text: tuple[bool, ...]) -> list[Any]:
    n = len(names)
    for i, row in enumerate(instances):
        if type(row) is not list:
            raise RequestError(422, "bad_request",
                               f"'instances' must hold lists of numbers; row {i} is {_type_name(row)}.")
        if len(row) != n:
            raise RequestError(422, "wrong_count", f"row {i} has {len(row)} values but the model takes {n}: "
                                                   f"{_names(list(names))}.")
        _check_row_types(row, i, names, text)
    return instances


def rows_array(key: str, rows: Any, reference: Reference, max_rows: int) -> np.ndarray | MixedRows:
    """``rows`` (objects of feature: value, lists in feature order, or an array) as a float64 array,
    or as :class:`MixedRows` for a model with text features."""
    text = reference.categorical if any(reference.categorical) else ()
    if isinstance(rows, np.ndarray) and text:
        rows = rows.tolist()  # a numeric tensor: the text features' checks refuse it with their message
    if isinstance(rows, np.ndarray):
        if not len(rows):
            raise RequestError(422, "bad_request", f"{key!r} must hold at least one row.")
        if len(rows) > max_rows:
            raise RequestError(413, "too_many_rows", f"{len(rows)} rows is more than the limit of {max_rows} "
                                                     "per request.")
        return rows.astype(np.float64)
    if type(rows) is not list or not rows:
        raise RequestError(422, "bad_request", f"{key!r} must be a non-empty list.")
    if len(rows) > max_rows:
        raise RequestError(413, "too_many_rows", f"{len(rows)} rows is more than the limit of {max_rows} per request.")
    names = reference.feature_names
    values = _from_rows(rows, names, text) if type(rows[0]) is dict else _from_instances(rows, names, text)
    try:
        if not text:
            return np.array(values, dtype=np.float64)
        raw = np.empty((len(values), len(names)), dtype=object)
        raw[:] = values
        for j in (j for j, is_text in enumerate(text) if is_text):
            raw[:, j] = [str(v) for v in raw[:, j]]
        codes = reference.encode(raw)
        for j in (j for j, is_text in enumerate(text) if not is_text):
            raw[:, j] = codes[:, j]
        return MixedRows(codes, raw)
    except OverflowError:
        raise RequestError(422, "wrong_type", "a value is too large for a 64-bit float.") from None


def parse_predict(body: bytes, reference: Reference, *, max_rows: int) -> np.ndarray:
    """The rows of a predict request as a float64 array (non-finite values still in it).

    Accepts ``{"rows": [{feature: value, ...}, ...]}`` or ``{"instances": [[...], ...]}``.
    """
    data = parse_json(body)
    if type(data) is not dict or len(data.keys() & {"rows", "instances"}) != 1:
        raise RequestError(422, "bad_request", "body must be an object with either 'rows' (a list of "
                                               "{feature: value} objects) or 'instances' (a list of lists).")
    key = "rows" if "rows" in data else "instances"
    if key == "rows" and type(data[key]) is list and data[key] and type(data[key][0]) is not dict:
        raise RequestError(422, "bad_request", f"'rows' must hold objects (feature: value); row 0 is "
                                               f"{_type_name(data[key][0])}.")
    return rows_array(key, data[key], reference, max_rows)


def nonfinite_counts(X: np.ndarray) -> tuple[int, int, np.ndarray | None]:
    """NaN count, inf count and the mask of non-finite values (None when all are finite)."""
    finite = np.isfinite(X)
    if finite.all():
        return 0, 0, None
    nan = int(np.isnan(X).sum())
    return nan, int((~finite).sum()) - nan, ~finite


def reject_nonfinite(mask: np.ndarray, names: Sequence[str]) -> RequestError:
    i, j = (int(k) for k in np.argwhere(mask)[0])
    return RequestError(
        422, "nonfinite", f"row {i} feature {names[j]!r} is NaN or infinite ({int(mask.sum())} such values); "
        "send finite numbers, or set nonfinite = 'impute' in the monitoring config."
    )
