"""The OpenAPI description of the server's bodies (``/openapi.json``).

Bodies are parsed by :mod:`._validate` (faster than a model per request, and with
the messages the API documents); these JSON Schemas say the same for clients and
for API fuzzers such as Schemathesis. Route decorators take them as ``openapi_extra``.
"""

from __future__ import annotations

from typing import Any

NUMBER = {"type": "number"}
ROW_LIST = {"type": "array", "items": {"type": "array", "items": NUMBER}, "minItems": 1}
ROW_OBJECTS = {"type": "array", "items": {"type": "object", "additionalProperties": NUMBER}, "minItems": 1}
ERROR = {"type": "object", "required": ["error", "kind"],
         "properties": {"error": {"type": "string"}, "kind": {"type": "string"}}}

PREDICT = {
    "oneOf": [
        {"type": "object", "required": ["rows"], "properties": {"rows": ROW_OBJECTS}, "additionalProperties": False},
        {"type": "object", "required": ["instances"], "properties": {"instances": ROW_LIST},
         "additionalProperties": False},
    ],
}
PREDICTIONS = {"type": "array", "items": {"type": ["number", "string", "integer", "null"]}}
PREDICTED = {"type": "object", "required": ["predictions", "ids", "model_version"],
             "properties": {"predictions": PREDICTIONS, "ids": {"type": "array", "items": {"type": "string"}},
                            "model_version": {"type": "string"}}}

MLFLOW = {
    "oneOf": [
        {"type": "object", "required": ["dataframe_split"], "properties": {"dataframe_split": {
            "type": "object", "required": ["data"],
            "properties": {"columns": {"type": "array", "items": {"type": "string"}}, "data": ROW_LIST}}}},
        {"type": "object", "required": ["dataframe_records"], "properties": {"dataframe_records": ROW_OBJECTS}},
        {"type": "object", "required": ["instances"], "properties": {"instances": ROW_LIST}},
        {"type": "object", "required": ["inputs"], "properties": {"inputs": ROW_LIST}},
    ],
}

_SHAPE = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1, "maxItems": 2}
_TENSOR = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
    "name": {"type": "string"}, "shape": _SHAPE,
    "datatype": {"enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
                          "FP32", "FP64", "BYTES"]},
    "data": {"type": "array", "items": {"type": ["number", "string", "boolean", "array"]}},
    "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}}}}
V2_INFER = {"type": "object", "required": ["inputs"], "properties": {
    "id": {"type": "string"}, "inputs": {"type": "array", "items": _TENSOR, "minItems": 1},
    "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"}, "parameters": {"type": "object"}}}},
    "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}}}}
V2_INFERRED = {"type": "object", "required": ["model_name", "outputs"], "properties": {
    "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
    "outputs": {"type": "array", "items": {"type": "object", "required": ["name", "shape", "datatype"]}},
    "parameters": {"type": "object"}}}
_BINARY = {"schema": {"type": "string", "format": "binary", "description": "a JSON header of "
                      "Inference-Header-Content-Length bytes, then the binary tensors"}}
_CSV = {"schema": {"type": "string", "description": "a header row of column names, then one row per prediction"}}

_FEEDBACK_ITEM = {
    "type": "object", "required": ["prediction_id", "label"],
    "properties": {"prediction_id": {"type": "string"}, "label": {"type": ["string", "number"]},
                   "slice": {"type": "object", "maxProperties": 8,
                             "additionalProperties": {"type": ["string", "number"]}}},
}
FEEDBACK = {"oneOf": [_FEEDBACK_ITEM, {"type": "array", "items": _FEEDBACK_ITEM, "minItems": 1}]}
RELOAD = {"type": "object", "properties": {"model_uri": {"type": "string"}}}
CONFIG = {"type": "object", "description": "a monitoring config (see docs/serving.md); unknown keys are refused"}

_REFUSALS = {str(code): {"description": what, "content": {"application/json": {"schema": ERROR}}}
             for code, what in ((400, "malformed JSON"), (401, "missing or wrong token"), (413, "too large"),
                                (415, "not declared JSON"), (422, "does not fit the model or the API"),
                                (429, "rate limited"))}


def body(schema: dict[str, Any], answer: dict[str, Any] | None = None, *, required: bool = True,
         binary: bool = False, csv: bool = False) -> dict[str, Any]:
    """``openapi_extra`` for a route taking a JSON body of ``schema`` (or ``binary`` tensors, or ``csv``)
    and answering ``answer``."""
    responses: dict[str, Any] = dict(_REFUSALS)
    if answer is not None:
        responses["200"] = {"description": "OK", "content": {"application/json": {"schema": answer}}}
    content = {"application/json": {"schema": schema}, **({"application/octet-stream": _BINARY} if binary else {}),
               **({"text/csv": _CSV} if csv else {})}
    return {"requestBody": {"required": required, "content": content}, "responses": responses}
