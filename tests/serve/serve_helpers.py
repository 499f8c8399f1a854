"""Helpers for the serving tests: a real server process and a webhook receiver, both on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
from helpers import ServerProcess, free_port  # noqa: F401 - ServerProcess re-exported for the serve tests
from prometheus_client.parser import text_string_to_metric_families

ADMIN_TOKEN = "admin-token-for-tests"


class WebhookReceiver:
    """A tiny HTTP server on 127.0.0.1 that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        events = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                events.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 10) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.events)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def as_rows(X: np.ndarray, names: tuple[str, ...]) -> list[dict]:
    """Rows as a client sends them: {feature: value}."""
    return [dict(zip(names, map(float, row))) for row in X]


def scrape(client: httpx.Client) -> dict[str, list]:
    """/metrics parsed with the Prometheus client's parser: sample name -> samples."""
    response = client.get("/metrics")
    assert response.status_code == 200
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def scrape_until(client: httpx.Client, ready, timeout: float = 15) -> dict[str, list]:
    """Scrape until ``ready(samples)`` holds: the monitor counts predictions between requests."""
    deadline = time.monotonic() + timeout
    samples = scrape(client)
    while not ready(samples) and time.monotonic() < deadline:
        time.sleep(0.1)
        samples = scrape(client)
    return samples


def value(samples: dict[str, list], metric: str, /, **labels: str) -> float:
    """Sum of the samples of ``metric`` whose labels match."""
    found = [s.value for s in samples.get(metric, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(found)


def mean_glucose(X: np.ndarray, predictions: np.ndarray) -> float:
    """A custom metric the test server loads by name: the window's mean of feature 1 (plas)."""
    return float(X[:, 1].mean())


class PredictingClient(threading.Thread):
    """Predicts one row after another (cycling through ``rows``) until stopped, at most ``limit``
    requests; ``answers`` holds (status, model_version) of each."""

    def __init__(self, url: str, rows: list[dict], limit: int = 3000) -> None:
        super().__init__(daemon=True)
        self.url, self.rows, self.limit = url, rows, limit
        self.answers: list[tuple[int, str | None]] = []
        self.stopped = threading.Event()
        self.pause = 0.005  # seconds between requests; a test may change it as it goes

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10, trust_env=False) as client:
            while not self.stopped.is_set() and len(self.answers) < self.limit:
                try:
                    response = client.post("/predict", json={"rows": [self.rows[len(self.answers) % len(self.rows)]]})
                    version = response.json().get("model_version") if response.status_code == 200 else None
                    self.answers.append((response.status_code, version))
                except httpx.HTTPError as error:
                    self.answers.append((0, type(error).__name__))
                time.sleep(self.pause)

    def wait_for(self, version: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.is_alive():
            if any(v == version for _, v in self.answers[-20:]):
                return True
            time.sleep(0.05)
        return False


def table_with_categories():
    """diabetes with ``age`` binned into a text column ``age_group`` (young / middle / senior):
    features and labels."""
    import os

    import pandas as pd

    frame = pd.read_csv(os.path.join(os.environ["FRUGALML_DATA_DIR"], "diabetes.csv.gz"))
    groups = pd.cut(frame.pop("age"), [0, 30, 45, 200], labels=["young", "middle", "senior"])
    frame["age_group"] = groups.astype(str)
    return frame.drop(columns="target"), frame["target"]


def category_pipeline(n_estimators: int = 20):
    """A user's Pipeline: one-hot encoding of the text column, then a random forest."""
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    encode = make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["age_group"]), remainder="passthrough")
    return make_pipeline(encode, RandomForestClassifier(n_estimators=n_estimators, random_state=0))


def pipeline_logged(trial) -> None:
    """A training function on a table with a text column: fits the Pipeline, logs it and its reference."""
    X, y = table_with_categories()
    trial.plan(1)
    model = category_pipeline(trial.params["n_estimators"]).fit(X, y)
    trial.step(loss=0.0, n_samples=len(X))
    trial.report(val_loss=1.0 - model.score(X, y))
    trial.log_model(model, input_example=X.head(3))
    trial.log_reference(X, y)
