"""Parse and validate request bodies against the training schema (no HTTP objects here).

Every problem raises :class:`RequestError` with an HTTP status, a short ``kind``
(the label of ``frugalml_errors_total``) and a one-line message that says what was
wrong and what the model expects.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from frugalml.serve._reference import Reference

_NUMBERS = {int, float}
_SHOWN = 8


# Every kind of refused or failed request, the ``kind`` of the JSON error and the label of
# ``frugalml_errors_total`` (pre-created at 0, so rate() sees the first errors of a kind).
ERROR_KINDS = (
    "bad_json", "bad_request", "bad_config", "bad_feedback", "wrong_count", "wrong_features", "wrong_type",
    "nonfinite", "too_large", "too_many_rows", "body_timeout", "client_disconnected", "unsupported_media_type",
    "unauthorized", "forbidden", "rate_limited", "monitoring_disabled", "model_load", "model_error", "not_found",
    "method_not_allowed", "http_error", "internal",
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
    except (UnicodeDecodeError, ValueError) as error:  # ValueError: JSONDecodeError, or an int of > 4300 digits
        raise RequestError(400, "bad_json", f"request body is not valid JSON: {error}.") from None
    except RecursionError:
        raise RequestError(400, "bad_json", "request body is not valid JSON: nested too deeply.") from None


def _check_row_types(row: Sequence[Any], i: int, names: Sequence[str]) -> None:
    if set(map(type, row)) <= _NUMBERS:
        return
    for name, value in zip(names, row):
        if type(value) not in _NUMBERS:
            raise RequestError(422, "wrong_type", f"row {i} feature {name!r} must be a number, got {_type_name(value)} "
                                                  f"({json.dumps(value)[:40]}).")


def _from_rows(rows: list[Any], names: tuple[str, ...]) -> list[list[Any]]:
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
        _check_row_types(row_values, i, names)
        values.append(row_values)
    return values


def _from_instances(instances: list[Any], names: tuple[str, ...]) -> list[Any]:
    n = len(names)
    for i, row in enumerate(instances):
        if type(row) is not list:
            raise RequestError(422, "bad_request",
                               f"'instances' must hold lists of numbers; row {i} is {_type_name(row)}.")
        if len(row) != n:
            raise RequestError(422, "wrong_count", f"row {i} has {len(row)} values but the model takes {n}: "
                                                   f"{_names(list(names))}.")
        _check_row_types(row, i, names)
    return instances


def _as_array(key: str, rows: Any, reference: Reference, max_rows: int) -> np.ndarray:
    """``rows`` (objects of feature: value, or lists in feature order) as a float64 array."""
    if type(rows) is not list or not rows:
        raise RequestError(422, "bad_request", f"{key!r} must be a non-empty list.")
    if len(rows) > max_rows:
        raise RequestError(413, "too_many_rows", f"{len(rows)} rows is more than the limit of {max_rows} per request.")
    names = reference.feature_names
    values = _from_rows(rows, names) if type(rows[0]) is dict else _from_instances(rows, names)
    try:
        return np.array(values, dtype=np.float64)
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
    return _as_array(key, data[key], reference, max_rows)


MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def parse_mlflow(body: bytes, reference: Reference, *, max_rows: int) -> np.ndarray:
    """A body in MLflow's scoring protocol (``mlflow models serve``'s ``/invocations``) as rows.

    ``{"dataframe_split": {"columns": [...], "data": [[...]]}}``, ``{"dataframe_records":
    [{col: v}, ...]}``, ``{"instances": [[...]] or [{col: v}]}`` or ``{"inputs": [[...]]
    or {col: [values]}}``.
    """
    data = parse_json(body)
    if type(data) is not dict or len(data.keys() & set(MLFLOW_KEYS)) != 1:
        raise RequestError(422, "bad_request", f"body must be an object with exactly one of {', '.join(MLFLOW_KEYS)} "
                                               "(MLflow's scoring protocol).")
    key = next(k for k in MLFLOW_KEYS if k in data)
    value = data[key]
    if key == "dataframe_split":
        if type(value) is not dict or type(value.get("data")) is not list:
            raise RequestError(422, "bad_request", "'dataframe_split' needs 'columns' and 'data' (a list of rows).")
        columns = value.get("columns")
        if columns is None:
            return _as_array(key, value["data"], reference, max_rows)
        if type(columns) is not list or any(type(row) is not list or len(row) != len(columns) for row in value["data"]):
            raise RequestError(422, "bad_request", "'dataframe_split' rows must each have one value per column.")
        value = [dict(zip(map(str, columns), row)) for row in value["data"]]
    elif key == "inputs" and type(value) is dict:
        lengths = {len(v) if type(v) is list else -1 for v in value.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise RequestError(422, "bad_request", "'inputs' as an object needs a list of values per column, "
                                                   "all of one length.")
        value = [dict(zip(value, row)) for row in zip(*value.values())]
    return _as_array(key, value, reference, max_rows)


def parse_v2(body: bytes, reference: Reference, *, max_rows: int) -> np.ndarray:
    """An Open Inference Protocol v2 request (KServe) as rows.

    Either one input tensor of shape ``[rows, features]`` (data flat or nested), or one
    input per feature, named after it, of shape ``[rows]``.
    """
    data = parse_json(body)
    inputs = data.get("inputs") if type(data) is dict else None
    if type(inputs) is not list or not inputs or any(type(i) is not dict for i in inputs):
        raise RequestError(422, "bad_request", "body must be {\"inputs\": [{\"name\", \"shape\", \"datatype\", "
                                               "\"data\"}, ...]} (Open Inference Protocol v2).")
    names = reference.feature_names
    for tensor in inputs:
        if type(tensor.get("data")) is not list or type(tensor.get("shape")) is not list:
            raise RequestError(422, "bad_request", f"input {str(tensor.get('name'))[:40]!r} needs 'shape' and 'data'.")
    if len(inputs) == 1:
        tensor = inputs[0]
        shape, flat = tensor["shape"], _flatten(tensor["data"])
        if len(shape) != 2 or shape[1] != len(names) or len(flat) != shape[0] * shape[1]:
            raise RequestError(422, "wrong_count", f"the input tensor must have shape [rows, {len(names)}] and as many "
                                                   f"values; got shape {str(shape)[:40]} with {len(flat)} values.")
        rows = [flat[i * shape[1]:(i + 1) * shape[1]] for i in range(shape[0])]
        return _as_array("inputs", rows, reference, max_rows)
    by_name = {str(t.get("name")): _flatten(t["data"]) for t in inputs}
    if set(by_name) != set(names) or len({len(v) for v in by_name.values()}) != 1:
        raise RequestError(422, "wrong_features", f"one input per feature, each of the same length: "
                                                  f"{_names(list(names))}.")
    rows = [dict(zip(by_name, row)) for row in zip(*by_name.values())]
    return _as_array("inputs", rows, reference, max_rows)


def _flatten(data: list[Any]) -> list[Any]:
    if data and all(type(d) is list for d in data):
        return [v for row in data for v in row]
    return data


def v2_datatype(predictions: np.ndarray) -> str:
    return {"f": "FP64", "i": "INT64", "u": "UINT64", "b": "BOOL"}.get(predictions.dtype.kind, "BYTES")


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
