"""User-controlled strings that reach a Prometheus label never take /metrics down.

A lone surrogate in a feedback slice (valid JSON) used to make every later scrape
answer 500. Slice values are now refused at the boundary (422), and every label
value is made safe when it is exposed (alert names and custom metric names come
from the monitoring config, feature names from the model's data).
"""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serve_helpers import ADMIN_TOKEN

HOSTILE = ["\ud800", "a\udfffb", "line\nbreak", "nul\x00", "bell\x07", "quote\"back\\slash", "x" * 5000,
           "\u202eright-to-left"]


def _send(server, method: str, url: str, payload, headers=None):
    """JSON with \\u escapes, as a browser or the fuzzer sends it (httpx's json= cannot encode a lone surrogate)."""
    return server.client.request(method, url, content=json.dumps(payload),
                                 headers={"Content-Type": "application/json", **(headers or {})})


def _metrics_ok(server) -> str:
    response = server.client.get("/metrics")
    assert response.status_code == 200, response.text[:200]
    list(text_string_to_metric_families(response.text))  # the Prometheus parser reads every line
    return response.text


@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
def test_a_hostile_slice_value_is_refused_and_metrics_stay_up(server, diabetes, model, hostile):
    _, split = diabetes
    body = server.client.post("/predict", json={"instances": split.X_test[:1].tolist()}).json()
    label = str(model.predict(split.X_test[:1])[0])
    response = _send(server, "POST", "/feedback", {"prediction_id": body["ids"][0], "label": label,
                                                   "slice": {"g": hostile}})
    if hostile.isprintable() and len(hostile) <= 64 and "\ud800" not in hostile and "\udfff" not in hostile:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code in (200, 422), response.text  # long values are cut to 64 characters
        if response.status_code == 422:
            assert response.json()["kind"] == "bad_feedback" and "printable" in response.json()["error"]
    time.sleep(0.25)  # two monitor ticks: the slice reaches the quality gauges
    _metrics_ok(server)


def test_hostile_alert_names_are_refused_with_422_and_metrics_stay_up(server):
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    original = server.client.get("/admin/monitoring-config", headers=admin).json()
    try:
        for name in HOSTILE[:5]:
            alert = {"name": name, "metric": "drift.detected", "op": ">=", "threshold": 1}
            put = _send(server, "PUT", "/admin/monitoring-config", {**original, "alerts": [alert]}, admin)
            assert put.status_code == 422 and put.json()["kind"] == "bad_config", put.text
            assert "printable text" in put.json()["error"]
            _metrics_ok(server)
    finally:
        server.client.put("/admin/monitoring-config", json=original, headers=admin)


def test_every_label_value_is_made_safe_when_exposed():
    """Feature and model names come from the user's data and registry, not from a request."""
    from prometheus_client import CollectorRegistry, generate_latest

    from frugalml.serve._metrics import MAX_LABEL_CHARS, _gauge

    class Hostile:
        def collect(self):
            yield _gauge("frugalml_feature_psi", "PSI", ["feature"], [([h], 1.0) for h in HOSTILE])

    registry = CollectorRegistry()
    registry.register(Hostile())
    text = generate_latest(registry).decode("utf-8")
    values = [s.labels["feature"] for f in text_string_to_metric_families(text) for s in f.samples]
    assert len(values) == len(set(values)) == len(HOSTILE)
    assert all(v.isprintable() and len(v) <= MAX_LABEL_CHARS for v in values)
    assert "\\ud800" in values and 'quote"back\\slash' in values  # kept readable, not dropped


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data", None])
def test_a_body_that_is_not_declared_json_gets_415(server, content_type):
    """A cross-site form post cannot submit labels or predictions (no predict token needed for that)."""
    headers = {"Content-Type": content_type} if content_type else {}
    for path in ("/predict", "/feedback"):
        response = server.client.post(path, content=b'{"instances": [[1, 2, 3, 4, 5, 6, 7, 8]]}', headers=headers)
        assert response.status_code == 415 and response.json()["kind"] == "unsupported_media_type", response.text
    _metrics_ok(server)


def test_head_answers_every_get_route_and_error_series_exist_from_the_start(server):
    for path in ("/health", "/metrics"):
        head = server.client.head(path)
        assert head.status_code == 200 and head.content == b""
    text = _metrics_ok(server)
    for kind in ("too_large", "unsupported_media_type", "rate_limited"):
        assert f'frugalml_errors_total{{kind="{kind}"}}' in text
    assert 'frugalml_requests_total{code="200",endpoint="/feedback"}' in text
