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

_TENSOR = {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
    "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
    "datatype": {"type": "string"}, "data": {"type": "array", "items": NUMBER}}}
V2_INFER = {"type": "object", "required": ["inputs"],
            "properties": {"inputs": {"type": "array", "items": _TENSOR, "minItems": 1}}}

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


def body(schema: dict[str, Any], answer: dict[str, Any] | None = None, *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` for a route taking a JSON body of ``schema`` and answering ``answer``."""
    responses: dict[str, Any] = dict(_REFUSALS)
    if answer is not None:
        responses["200"] = {"description": "OK", "content": {"application/json": {"schema": answer}}}
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}},
            "responses": responses}
