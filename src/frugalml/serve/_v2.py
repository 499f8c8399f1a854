"""The Open Inference Protocol v2 (KServe, Triton) over HTTP, as its clients speak it.

A request is JSON, or JSON followed by raw tensors (the binary tensor extension: the
``Inference-Header-Content-Length`` header says where the JSON ends, and each binary
input says its ``binary_data_size``). Inputs are one ``[rows, features]`` tensor or
one tensor per feature named after it (``[rows]`` or ``[rows, 1]``). Every shape and
size is checked before anything is allocated: a malformed field is a
:class:`RequestError` (4xx), never an exception of the parser's own.

Example:
    >>> from frugalml.serve._reference import Reference
    >>> request = parse_request(b'{"id": "a", "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64",'
    ...                         b' "data": [1, 2]}]}', None, Reference.schema_only(["p", "q"]), max_rows=10)
    >>> request.id, request.rows.tolist()
    ('a', [[1.0, 2.0]])
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from frugalml.serve._reference import Reference
from frugalml.serve._validate import MixedRows, RequestError, parse_json, rows_array

# v2 datatype -> numpy dtype of its binary form (little-endian); BYTES is length-prefixed.
DTYPES = {"BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "<i1",
          "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
DATATYPES = (*DTYPES, "BYTES")
OUTPUT = "predictions"
_MAX_DIMS = 2


@dataclass(frozen=True)
class V2Request:
    """A parsed inference request: its ``id`` (echoed), the rows, and whether outputs go back in binary."""

    id: str | None
    rows: np.ndarray | MixedRows
    binary_output: bool


def _bad(message: str, kind: str = "bad_request") -> RequestError:
    return RequestError(422, kind, message)


def _label(tensor: dict[str, Any]) -> str:
    return json.dumps(str(tensor.get("name", "")))[:42]


def _shape(tensor: dict[str, Any], max_rows: int) -> tuple[int, ...]:
    shape = tensor.get("shape")
    if (type(shape) is not list or not 1 <= len(shape) <= _MAX_DIMS
            or any(type(d) is not int or d < 0 for d in shape)):
        raise _bad(f"input {_label(tensor)}: 'shape' must be a list of 1 or 2 non-negative integers; got "
                   f"{json.dumps(shape)[:60]}.")
    if shape[0] > max_rows:
        raise RequestError(413, "too_many_rows", f"input {_label(tensor)} has {shape[0]} rows, more than the limit "
                                                 f"of {max_rows} per request.")
    return tuple(shape)


def _flat(data: Any, limit: int) -> list[Any]:
    """Row-major values of nested lists, iteratively (no recursion limit), refusing more than ``limit``."""
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if type(value) is list:
                stack.append(iter(value))
                break
            out.append(value)
            if len(out) > limit:
                raise _bad(f"an input holds more than the {limit} values its shape allows.", "wrong_count")
        else:
            stack.pop()
    return out


def _bytes_elements(raw: memoryview, count: int, label: str) -> list[str]:
    """``count`` length-prefixed (uint32, little-endian) UTF-8 strings filling ``raw`` exactly."""
    values, offset = [], 0
    while offset < len(raw) and len(values) < count:
        if offset + 4 > len(raw):
            break
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            break
        try:
            values.append(bytes(raw[offset:offset + size]).decode("utf-8"))
        except UnicodeDecodeError:
            raise _bad(f"input {label}: a BYTES element is not UTF-8 text.", "wrong_type") from None
        offset += size
    if len(values) != count or offset != len(raw):
        raise _bad(f"input {label}: its binary data does not hold exactly {count} length-prefixed BYTES elements.",
                   "wrong_count")
    return values


def _binary_size(tensor: dict[str, Any]) -> int | None:
    parameters = tensor.get("parameters", {})
    if type(parameters) is not dict:
        raise _bad(f"input {_label(tensor)}: 'parameters' must be an object.")
    size = parameters.get("binary_data_size")
    if size is not None and (type(size) is not int or size < 0):
        raise _bad(f"input {_label(tensor)}: 'binary_data_size' must be a non-negative integer; got "
                   f"{json.dumps(size)[:40]}.")
    return size


def _values(tensor: dict[str, Any], shape: tuple[int, ...], binary: memoryview | None) -> Any:
    """The tensor's values, flat: from ``binary`` (its slice of the body) or from JSON ``data``."""
    label, datatype = _label(tensor), tensor.get("datatype")
    if datatype not in DATATYPES:
        raise _bad(f"input {label}: 'datatype' must be one of {', '.join(DATATYPES)}; got "
                   f"{json.dumps(datatype)[:40]}.")
    count = math.prod(shape)
    if binary is not None:
        if datatype == "BYTES":
            return _bytes_elements(binary, count, label)
        dtype = np.dtype(DTYPES[datatype])
        if len(binary) != count * dtype.itemsize:
            raise _bad(f"input {label}: shape {list(shape)} of {datatype} needs {count * dtype.itemsize} bytes of "
                       f"binary data; got {len(binary)}.", "wrong_count")
        return np.frombuffer(binary, dtype=dtype)
    data = tensor.get("data")
    if type(data) is not list:
        raise _bad(f"input {label} needs 'data' (a list), or binary data with 'binary_data_size'.")
    flat = _flat(data, count)
    if len(flat) != count:
        raise _bad(f"input {label}: shape {list(shape)} needs {count} values; got {len(flat)}.", "wrong_count")
    if datatype == "BOOL":
        return [int(v) if type(v) is bool else v for v in flat]
    return flat


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview | None]:
    if header_length is None:
        return body, None
    if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
        raise RequestError(400, "bad_request", f"Inference-Header-Content-Length must be the byte length of the "
                                               f"JSON header, at most the body's {len(body)} bytes; got "
                                               f"{header_length[:40]!r}.")
    return body[:int(header_length)], memoryview(body)[int(header_length):]


def _tensors(inputs: list[dict[str, Any]], binary: memoryview | None, max_rows: int
             ) -> list[tuple[dict[str, Any], tuple[int, ...], Any]]:
    """Each input with its shape and flat values, the binary part cut in order and used up exactly."""
    offset, tensors = 0, []
    for tensor in inputs:
        shape = _shape(tensor, max_rows)
        size = _binary_size(tensor)
        piece = None
        if size is not None:
            if binary is None:
                raise RequestError(400, "bad_request", f"input {_label(tensor)} has 'binary_data_size' but the "
                                                       "request has no Inference-Header-Content-Length header.")
            if offset + size > len(binary):
                raise _bad(f"input {_label(tensor)}: 'binary_data_size' {size} runs past the end of the body "
                           f"({len(binary) - offset} bytes left).", "wrong_count")
            piece, offset = binary[offset:offset + size], offset + size
        tensors.append((tensor, shape, _values(tensor, shape, piece)))
    if binary is not None and offset != len(binary):
        raise _bad(f"the body has {len(binary) - offset} bytes of binary data that no input claims.", "wrong_count")
    return tensors


def _rows(tensors: list[tuple[dict[str, Any], tuple[int, ...], Any]], reference: Reference, max_rows: int
          ) -> np.ndarray | MixedRows:
    names = reference.feature_names
    n = len(names)
    if len(tensors) == 1 and not (n == 1 and len(tensors[0][1]) == 1):
        tensor, shape, values = tensors[0]
        if len(shape) != 2 or shape[1] != n:
            raise _bad(f"the input tensor must have shape [rows, {n}]; got {list(shape)}.", "wrong_count")
        if isinstance(values, np.ndarray):
            return rows_array("inputs", values.reshape(shape), reference, max_rows)
        return rows_array("inputs", [values[i * n:(i + 1) * n] for i in range(shape[0])], reference, max_rows)
    by_name = {str(tensor.get("name")): (shape, values) for tensor, shape, values in tensors}
    if len(by_name) != len(tensors) or set(by_name) != set(names):
        raise _bad(f"send one [rows, {n}] input, or one input per feature named after it: "
                   f"{', '.join(names[:8])}{' ...' if n > 8 else ''}.", "wrong_features")
    lengths = {shape[0] for shape, _ in by_name.values()}
    if len(lengths) != 1 or any(len(shape) == 2 and shape[1] != 1 for shape, _ in by_name.values()):
        raise _bad("per-feature inputs must all have shape [rows] (or [rows, 1]) with the same rows.", "wrong_count")
    columns = [by_name[name][1] for name in names]
    if all(isinstance(c, np.ndarray) for c in columns):
        return rows_array("inputs", np.stack(columns, axis=1), reference, max_rows)
    columns = [c.tolist() if isinstance(c, np.ndarray) else c for c in columns]
    return rows_array("inputs", [list(row) for row in zip(*columns)], reference, max_rows)


def _binary_output(data: dict[str, Any]) -> bool:
    parameters = data.get("parameters", {})
    if type(parameters) is not dict:
        raise _bad("'parameters' must be an object.")
    wanted = parameters.get("binary_data_output", False)
    outputs = data.get("outputs", [])
    if type(outputs) is not list or any(type(o) is not dict for o in outputs):
        raise _bad("'outputs' must be a list of objects with a 'name'.")
    for output in outputs:
        if output.get("name") != OUTPUT:
            raise _bad(f"unknown output {json.dumps(output.get('name'))[:40]}; this model has one output, "
                       f"{OUTPUT!r}.")
        options = output.get("parameters", {})
        if type(options) is not dict:
            raise _bad(f"output {OUTPUT!r}: 'parameters' must be an object.")
        wanted = options.get("binary_data", wanted)
    if type(wanted) is not bool:
        raise _bad("'binary_data_output' and 'binary_data' must be true or false.")
    return wanted


def parse_request(body: bytes, header_length: str | None, reference: Reference, *, max_rows: int) -> V2Request:
    """A v2 inference request (``header_length``: its Inference-Header-Content-Length header, if any)."""
    header, binary = _split(body, header_length)
    data = parse_json(header)
    inputs = data.get("inputs") if type(data) is dict else None
    if type(inputs) is not list or not inputs or any(type(i) is not dict for i in inputs):
        raise _bad("body must be {\"inputs\": [{\"name\", \"shape\", \"datatype\", \"data\"}, ...]} "
                   "(Open Inference Protocol v2).")
    request_id = data.get("id")
    if request_id is not None and type(request_id) is not str:
        raise _bad("'id' must be a string.")
    binary_output = _binary_output(data)
    rows = _rows(_tensors(inputs, binary, max_rows), reference, max_rows)
    return V2Request(request_id, rows, binary_output)


def datatype(predictions: np.ndarray) -> str:
    """The v2 datatype of an output array (strings and objects are BYTES)."""
    return {"f": "FP64", "i": "INT64", "u": "UINT64", "b": "BOOL"}.get(predictions.dtype.kind, "BYTES")


def _encode(values: np.ndarray, kind: str) -> bytes:
    if kind == "BYTES":
        parts = [str(v).encode("utf-8", "backslashreplace") for v in values.tolist()]
        return b"".join(struct.pack("<I", len(p)) + p for p in parts)
    return np.ascontiguousarray(values, dtype=DTYPES[kind]).tobytes()


def response(request: V2Request, model_name: str, version: str, predictions: np.ndarray, output_type: str,
             jsonable: Sequence[Any], ids: list[str]) -> tuple[bytes, dict[str, str]]:
    """The answer's body and headers: JSON, or a JSON header plus binary outputs when asked for."""
    output: dict[str, Any] = {"name": OUTPUT, "shape": [len(predictions)], "datatype": output_type}
    raw = b""
    if request.binary_output:
        raw = _encode(predictions, output_type)
        output["parameters"] = {"binary_data_size": len(raw)}
    else:
        output["data"] = list(jsonable)
    payload = {"model_name": model_name, "model_version": version, **({"id": request.id} if request.id is not None else {}),
               "outputs": [output], "parameters": {"prediction_ids": ids}}
    header = json.dumps(payload).encode("utf-8")
    if not request.binary_output:
        return header, {"content-type": "application/json"}
    return header + raw, {"content-type": "application/octet-stream",
                          "inference-header-content-length": str(len(header))}
