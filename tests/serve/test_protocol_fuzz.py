"""Hostile protocol fields on the v2 and MLflow routes, fuzzed against a real server: every answer
is a 4xx one-line JSON error (or a 200), never a 5xx, never exception text (issue 23)."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

N_FEATURES = 8  # diabetes
V2 = "/v2/models/model/infer"
_ABSURD = [-1, 0, 2**31, 2**63, 2**64, 10**30, -(2**63)]
_DIM = st.one_of(st.integers(-3, 12), st.sampled_from(_ABSURD), st.floats(allow_nan=False), st.booleans(),
                 st.text(max_size=3), st.none(), st.just([1]))
_VALUE = st.one_of(st.floats(), st.integers(), st.sampled_from([10**400, True, None, "x", [], {}]))


def _assert_refused_cleanly(response, case) -> None:
    assert response.status_code < 500, (case, response.status_code, response.text[:300])
    if response.status_code >= 400:
        error = response.json()
        assert set(error) == {"error", "kind"}, case
        assert "\n" not in error["error"] and "Traceback" not in error["error"], case
        assert "Error:" not in error["error"] and "Exception" not in error["error"], (case, error)


def _post(server, path: str, body):
    """POST ``body`` as JSON, NaN and Infinity included (httpx's own encoder refuses them)."""
    return server.client.post(path, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


def _v2(shape, data, datatype="FP64", **extra):
    return {"inputs": [{"name": "input-0", "shape": shape, "datatype": datatype, "data": data, **extra}]}


CORPUS = {
    "float shape": _v2([1.5, 8], list(range(8))),
    "float width": _v2([1, 8.0], list(range(8))),
    "negative rows": _v2([-1, 8], []),
    "negative width": _v2([1, -8], list(range(8))),
    "bool shape": _v2([True, 8], list(range(8))),
    "string shape": _v2(["1", "8"], list(range(8))),
    "absurd rows": _v2([2**64, 8], list(range(8))),
    "absurd width": _v2([1, 10**30], list(range(8))),
    "absurd product": _v2([10**4, 10**4], list(range(8))),
    "shape/data mismatch": _v2([2, 8], list(range(8))),
    "three dims": _v2([1, 8, 1], list(range(8))),
    "empty shape": _v2([], list(range(8))),
    "deep data, too many values": _v2([1, 8], [[[[v, v]]] for v in range(8)]),
    "huge value": _v2([1, 8], [10**400] * 8),
    "unknown datatype": _v2([1, 8], list(range(8)), datatype="FP128"),
    "binary size without header": _v2([1, 8], None, parameters={"binary_data_size": 64}),
    "negative binary size": _v2([1, 8], None, parameters={"binary_data_size": -64}),
    "parameters not an object": _v2([1, 8], list(range(8)), parameters=[1]),
    "id not a string": {**_v2([1, 8], list(range(8))), "id": 5},
    "unknown output": {**_v2([1, 8], list(range(8))), "outputs": [{"name": "nope"}]},
    "binary flag not bool": {**_v2([1, 8], list(range(8))), "parameters": {"binary_data_output": "yes"}},
    "per-feature absurd": {"inputs": [{"name": n, "shape": [2**63], "datatype": "FP64", "data": [1]}
                                      for n in ("preg", "plas", "pres", "skin", "insu", "mass", "pedi", "age")]},
}

MLFLOW = {
    "split, absurd value": {"dataframe_split": {"columns": ["preg"], "data": [[10**400]]}},
    "split, rows not lists": {"dataframe_split": {"columns": ["a"], "data": [1, 2]}},
    "split, columns not a list": {"dataframe_split": {"columns": 5, "data": [[1]]}},
    "inputs, ragged columns": {"inputs": {"preg": [1, 2], "plas": [1]}},
    "inputs, nested": {"inputs": [[[1] * 8]]},
    "instances, absurd": {"instances": [[2**64] * 7 + [10**400]]},
    "records, not objects": {"dataframe_records": [1, 2]},
    "two formats": {"instances": [[1] * 8], "inputs": [[1] * 8]},
}


@pytest.mark.parametrize("case", list(CORPUS))
def test_a_malformed_v2_field_is_a_one_line_4xx(server, case):
    response = _post(server, V2, CORPUS[case])
    assert 400 <= response.status_code < 500, (case, response.text)
    _assert_refused_cleanly(response, case)


@pytest.mark.parametrize("case", list(MLFLOW))
def test_a_malformed_mlflow_body_is_a_one_line_4xx(server, case):
    response = _post(server, "/invocations", MLFLOW[case])
    assert 400 <= response.status_code < 500, (case, response.text)
    _assert_refused_cleanly(response, case)


def _binary(header: dict, raw: bytes, header_length: str | None = None):
    text = json.dumps(header).encode()
    return text + raw, {"Inference-Header-Content-Length": header_length or str(len(text))}


@pytest.mark.parametrize("case", ["length past body", "length not a number", "size past body", "size short",
                                  "unclaimed bytes", "bytes prefix absurd", "bytes not utf-8"])
def test_a_malformed_binary_tensor_is_a_one_line_4xx(server, case):
    shape = {"name": "input-0", "shape": [1, N_FEATURES], "datatype": "FP64"}
    raw = struct.pack("<8d", *range(8))
    body, headers = {
        "length past body": lambda: _binary({"inputs": [shape]}, raw, "999999"),
        "length not a number": lambda: _binary({"inputs": [shape]}, raw, "FFFFFFFFFFFFFFFF"),
        "size past body": lambda: _binary({"inputs": [{**shape, "parameters": {"binary_data_size": 2**64}}]}, raw),
        "size short": lambda: _binary({"inputs": [{**shape, "parameters": {"binary_data_size": 8}}]}, raw[:8]),
        "unclaimed bytes": lambda: _binary({"inputs": [{**shape, "parameters": {"binary_data_size": 64}}]}, raw * 2),
        "bytes prefix absurd": lambda: _binary({"inputs": [{**shape, "datatype": "BYTES", "shape": [1, 1],
                                                            "parameters": {"binary_data_size": 8}}]},
                                               struct.pack("<I", 2**32 - 1) + b"abcd"),
        "bytes not utf-8": lambda: _binary({"inputs": [{**shape, "datatype": "BYTES", "shape": [1, 1],
                                                        "parameters": {"binary_data_size": 6}}]},
                                           struct.pack("<I", 2) + b"\xff\xfe"),
    }[case]()
    response = server.client.post(V2, content=body, headers=headers)
    assert 400 <= response.status_code < 500, (case, response.text)
    _assert_refused_cleanly(response, case)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.lists(_DIM, max_size=3), data=st.lists(st.one_of(_VALUE, st.lists(_VALUE, max_size=9)), max_size=17),
       datatype=st.sampled_from(["FP64", "FP32", "INT64", "BOOL", "BYTES", "fp64", ""]),
       size=st.one_of(st.none(), st.sampled_from(_ABSURD), st.integers(0, 200)))
def test_fuzzed_v2_tensors_never_answer_5xx(server, shape, data, datatype, size):
    tensor = {"name": "input-0", "shape": shape, "datatype": datatype, "data": data}
    if size is not None:
        tensor["parameters"] = {"binary_data_size": size}
        body, headers = _binary({"inputs": [tensor]}, bytes(min(size, 200)) if size > 0 else b"")
        response = server.client.post(V2, content=body, headers=headers)
    else:
        response = _post(server, V2, {"inputs": [tensor]})
    _assert_refused_cleanly(response, (shape, data, datatype, size))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["dataframe_split", "dataframe_records", "instances", "inputs"]),
       value=st.recursive(_VALUE | st.text(max_size=4), lambda inner: st.lists(inner, max_size=9)
                          | st.dictionaries(st.sampled_from(["preg", "plas", "columns", "data", "x"]), inner,
                                            max_size=9), max_leaves=40))
def test_fuzzed_mlflow_bodies_never_answer_5xx(server, key, value):
    response = _post(server, "/invocations", {key: value})
    _assert_refused_cleanly(response, (key, value))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet="preg,plas\n\"0123456789.-e\x00x ", max_size=200))
def test_fuzzed_csv_bodies_never_answer_5xx(server, text):
    response = server.client.post("/invocations", content=text.encode(), headers={"Content-Type": "text/csv"})
    _assert_refused_cleanly(response, text)
