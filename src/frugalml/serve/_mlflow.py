"""MLflow's scoring protocol (``mlflow models serve``'s ``/invocations``): its four JSON formats and CSV.

Answers are those of MLflow's own scoring server for the same model and body
(``tests/serve/test_mlflow_conformance.py`` runs both): where the model's signature names its
columns (:class:`Signature`), rows must name them too (positional rows are refused), columns the
model does not take are ignored, and values are converted as MLflow converts them to the
signature's types (booleans and numeric text become numbers; an integer column truncates a
fraction toward zero). A bad body is a 4xx here as there.

Example:
    >>> from frugalml.serve._reference import Reference
    >>> parse_csv(b"q,p\\n2,1\\n", Reference.schema_only(["p", "q"]), max_rows=10).tolist()
    [[1.0, 2.0]]
    >>> signed = Signature(("p", "q"), frozenset({"p"}))
    >>> body = b'{"dataframe_records": [{"p": 1.7, "q": "2.5", "extra": 1}]}'
    >>> parse_json_body(body, Reference.schema_only(["p", "q"]), max_rows=10, signature=signed).tolist()
    [[1.0, 2.5]]
"""

from __future__ import annotations

import csv
import functools
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from frugalml.serve._reference import Reference
from frugalml.serve._validate import RequestError, parse_json, rows_array

CSV = "text/csv"
MEDIA = frozenset({"application/json", CSV})  # what `mlflow models serve` takes; anything else is 415 there too
KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_INT64 = (-2**63, 2**63)
_CSV_BOOLEANS = {"True": 1, "TRUE": 1, "true": 1, "False": 0, "FALSE": 0, "false": 0}  # pandas' read_csv reads these


@dataclass(frozen=True)
class Signature:
    """What ``mlflow models serve`` enforces of a model's input signature: the columns it names
    (None for a tensor signature or none, where rows may be positional) and which are integers."""

    columns: tuple[str, ...] | None = None
    integers: frozenset[str] = frozenset()


NO_SIGNATURE = Signature()


def signature(path: str | Path) -> Signature:
    """The input signature of the MLflow model in ``path`` (read once per version of its MLmodel file)."""
    try:
        stamp = (Path(path) / "MLmodel").stat().st_mtime_ns
    except OSError:
        return NO_SIGNATURE
    return _signature(str(path), stamp)


@functools.lru_cache(maxsize=8)
def _signature(path: str, stamp: int) -> Signature:
    """The signature of ``path`` as its MLmodel file was at ``stamp`` (the cache key)."""
    from mlflow.models import Model

    try:
        schema = Model.load(path).get_input_schema()
    except Exception:  # noqa: BLE001 - an unreadable signature is no signature; the model loaded already
        return NO_SIGNATURE
    if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
        return NO_SIGNATURE
    integers = {str(c.name) for c in schema.inputs if getattr(c.type, "name", "") in ("long", "integer")}
    return Signature(tuple(str(n) for n in schema.input_names()), frozenset(integers))


def mlflow_version() -> str:
    """The MLflow version, what ``mlflow models serve`` answers on ``/version``."""
    from mlflow.version import VERSION

    return VERSION


def _integer(value: int | float, name: str) -> int:
    """``value`` for an integer column. Beyond the 64-bit integers MLflow refuses an int too, but casts a
    float to an unrelated integer and predicts on that: refused here (a deliberate difference)."""
    if not _INT64[0] <= value < _INT64[1]:
        raise RequestError(422, "wrong_type", f"feature {name!r} is an integer column in the model's signature; "
                                              f"{value:.6g} is outside the 64-bit integers.")
    return int(value)  # toward zero, as pandas' astype(int64)


def _convert(value: Any, name: str, integer: bool) -> Any:
    """``value`` as MLflow converts a JSON value to its column's signature type (pandas' ``astype``):
    a boolean or numeric text becomes a number, an integer column truncates a fraction; what it
    cannot convert is left as it is, for the type checks to refuse."""
    if type(value) is bool:
        return int(value)
    if type(value) is str:
        try:
            value = int(value) if integer else float(value)
        except ValueError:
            return value
    if integer and type(value) in (int, float) and math.isfinite(value):
        return _integer(value, name)
    return value


def _conform(rows: Any, reference: Reference, signature: Signature) -> Any:
    """Rows as MLflow's server takes them for a model whose signature names its columns."""
    if signature.columns is None or type(rows) is not list:
        return rows
    if rows and type(rows[0]) is list:
        shown = ", ".join(signature.columns[:8]) + (", ..." if len(signature.columns) > 8 else "")
        raise RequestError(422, "wrong_features", f"the model's signature names its columns ({shown}): send rows as "
                                                  "objects of column: value, or 'dataframe_split' with 'columns'; "
                                                  "positional rows are refused, as `mlflow models serve` refuses them.")
    names = dict(zip(reference.feature_names, reference.categorical))
    return [{k: v if names[k] else _convert(v, k, k in signature.integers) for k, v in row.items() if k in names}
            if type(row) is dict else row for row in rows]


def parse_json_body(body: bytes, reference: Reference, *, max_rows: int,
                    signature: Signature = NO_SIGNATURE) -> np.ndarray:
    """``{"dataframe_split": {"columns": [...], "data": [[...]]}}``, ``{"dataframe_records":
    [{col: v}, ...]}``, ``{"instances": [[...]] or [{col: v}]}`` or ``{"inputs": [[...]]
    or {col: [values]}}`` as rows (positional rows only for a model whose signature names no columns)."""
    data = parse_json(body)
    if type(data) is not dict or len(data.keys() & set(KEYS)) != 1:
        raise RequestError(422, "bad_request", f"body must be an object with exactly one of {', '.join(KEYS)} "
                                               "(MLflow's scoring protocol).")
    key = next(k for k in KEYS if k in data)
    value = data[key]
    if key == "dataframe_split":
        if type(value) is not dict or type(value.get("data")) is not list:
            raise RequestError(422, "bad_request", "'dataframe_split' needs 'columns' and 'data' (a list of rows).")
        columns = value.get("columns")
        if columns is None:
            return rows_array(key, _conform(value["data"], reference, signature), reference, max_rows)
        if type(columns) is not list or any(type(row) is not list or len(row) != len(columns) for row in value["data"]):
            raise RequestError(422, "bad_request", "'dataframe_split' rows must each have one value per column.")
        value = [dict(zip(map(str, columns), row)) for row in value["data"]]
    elif key == "inputs" and type(value) is dict:
        lengths = {len(v) if type(v) is list else -1 for v in value.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise RequestError(422, "bad_request", "'inputs' as an object needs a list of values per column, "
                                                   "all of one length.")
        value = [dict(zip(value, row)) for row in zip(*value.values())]
    return rows_array(key, _conform(value, reference, signature), reference, max_rows)


def _cell(text: str) -> Any:
    """A CSV cell as pandas' reader would type it: an int, a float, None when empty, else the text."""
    if not text:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _signed_cell(value: Any, name: str, signature: Signature) -> Any:
    """A typed CSV cell as ``pandas.read_csv(dtype=...)`` reads it for the signature's column type."""
    if type(value) is str and value in _CSV_BOOLEANS:
        return _CSV_BOOLEANS[value]
    if name in signature.integers and type(value) in (int, float) and math.isfinite(value):
        if type(value) is float and not value.is_integer():
            raise RequestError(422, "wrong_type", f"feature {name!r} is an integer column in the model's signature; "
                                                  f"a CSV cell {value:.6g} has a fraction.")
        return _integer(value, name)
    return value


def parse_csv(body: bytes, reference: Reference, *, max_rows: int, signature: Signature = NO_SIGNATURE) -> np.ndarray:
    """A CSV table with a header row of column names (``pandas.DataFrame.to_csv(index=False)``) as rows."""
    try:
        lines = list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))
    except UnicodeDecodeError as error:
        raise RequestError(400, "bad_request", f"the CSV body is not UTF-8 text (byte {error.start}).") from None
    except csv.Error as error:  # a NUL byte or an unclosed quote: the reader's message names no internals
        raise RequestError(400, "bad_request", f"the CSV body cannot be read: {error}.") from None
    lines = [line for line in lines if line]
    if len(lines) < 2:
        raise RequestError(422, "bad_request", "a CSV body needs a header row of column names and at least one row.")
    header, rows = lines[0], lines[1:]
    if len(rows) > max_rows:
        raise RequestError(413, "too_many_rows", f"{len(rows)} rows is more than the limit of {max_rows} per request.")
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise RequestError(422, "wrong_count", f"CSV row {i} has {len(row)} values for {len(header)} columns.")
    if signature.columns is None:
        table = [{name: _cell(v) for name, v in zip(header, row)} for row in rows]
    else:  # columns the model does not take are ignored
        names = dict(zip(reference.feature_names, reference.categorical))
        table = [{name: _cell(v) if names[name] else _signed_cell(_cell(v), name, signature)
                  for name, v in zip(header, row) if name in names} for row in rows]
    return rows_array("csv", table, reference, max_rows)
