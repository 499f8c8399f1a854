"""A real Prometheus server scrapes `frugalml serve` on loopback while hostile feedback arrives.

The defect this guards against: a lone surrogate in a feedback slice made every later
scrape answer 500, so Prometheus marked the target down. Bounded: one Prometheus
process, a 1 s scrape interval, at most ~40 s.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import httpx
import pytest

from helpers import free_port

SURROGATE_SLICE = '{"prediction_id": "%s", "label": "%s", "slice": {"g": "\\ud800"}}'


@pytest.fixture
def prometheus(server, tmp_path):
    binary = shutil.which("prometheus")
    assert binary, "prometheus not found: `make system-deps` installs the prometheus package"
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: frugalml\n    static_configs:\n      - targets: ['127.0.0.1:{server.port}']\n")
    process = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False)
    try:
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=30)


def _query(prometheus, query: str) -> float | None:
    try:
        result = prometheus.get("/api/v1/query", params={"query": query}).json()["data"]["result"]
    except (httpx.TransportError, KeyError, ValueError):
        return None
    return float(result[0]["value"][1]) if result else None


def _wait_for_scrapes(prometheus, after: float, count: int = 2, timeout: float = 30) -> float:
    """``up`` of the target once Prometheus scraped it at least ``count`` seconds after ``after``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        scraped_at = _query(prometheus, 'timestamp(up{job="frugalml"})')
        if scraped_at is not None and scraped_at > after + count:
            return _query(prometheus, 'up{job="frugalml"}')
        time.sleep(0.5)
    raise AssertionError("Prometheus did not scrape the server in time")


def test_a_real_prometheus_keeps_the_target_up_through_hostile_feedback(server, diabetes, model, prometheus):
    _, split = diabetes
    assert _wait_for_scrapes(prometheus, time.time() - 1) == 1
    body = server.client.post("/predict", json={"instances": split.X_test[:5].tolist()}).json()
    labels = [str(v) for v in model.predict(split.X_test[:5])]
    for prediction_id, label in zip(body["ids"], labels):
        for payload in (SURROGATE_SLICE % (prediction_id, label),
                        json.dumps({"prediction_id": prediction_id, "label": label, "slice": {"g": "a\nb\x00"}})):
            response = server.client.post("/feedback", content=payload, headers={"Content-Type": "application/json"})
            assert response.status_code == 422, response.text
    assert _wait_for_scrapes(prometheus, time.time()) == 1
    assert server.client.get("/metrics").status_code == 200
