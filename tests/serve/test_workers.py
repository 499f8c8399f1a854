"""``frugalml serve --workers 2``: real worker processes on one port, one monitoring state.

A worker is addressed deterministically by its connection: every answer names its worker
(``X-Frugalml-Worker``), and a client with one kept-alive connection stays on the worker
that accepted it, so :func:`on_worker` opens connections until it holds one to the wanted
worker, and every answer after that is checked to come from it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import psutil
import pytest

from helpers import cli
from serve_helpers import ServerProcess, WebhookReceiver, scrape, scrape_until, value

WINDOW = 150
CONFIG = f"""
window_rows = {WINDOW}
interval_s = 0.1
webhooks = ["{{webhook}}"]

[[alerts]]
name = "input drift"
metric = "drift.detected"
op = ">="
threshold = 1
window = 2
"""


def start_workers(model_dir: Path, folder: Path, *args: str) -> ServerProcess:
    return ServerProcess(str(model_dir), "--workers", "2", *args, log=folder / "server.log").wait_announced()


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def workers(model_dir: Path, webhook, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("workers")
    (folder / "monitoring.toml").write_text(CONFIG.format(webhook=webhook.url))
    process = start_workers(model_dir, folder, "--config", str(folder / "monitoring.toml"))
    try:
        yield process
    finally:
        process.stop()


class WorkerClient:
    """A client whose one kept-alive connection is to worker ``index``; each answer is checked to be its."""

    def __init__(self, url: str, index: int, timeout: float = 60) -> None:
        self.index = index
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.client = httpx.Client(base_url=url, timeout=30, trust_env=False,
                                       limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
            if self.client.get("/health").headers["x-frugalml-worker"] == str(index):
                return
            self.client.close()
            time.sleep(0.01)
        raise AssertionError(f"no connection reached worker {index} in {timeout} s")

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        response = self.client.request(method, path, **kwargs)
        assert response.headers["x-frugalml-worker"] == str(self.index), "the connection moved to another worker"
        return response

    def post(self, path: str, **kwargs) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.request("GET", path, **kwargs)


@pytest.fixture
def pair(workers) -> Iterator[tuple[WorkerClient, WorkerClient]]:
    a, b = WorkerClient(workers.url, 0), WorkerClient(workers.url, 1)
    yield a, b
    a.client.close()
    b.client.close()


def test_feedback_for_ids_from_worker_a_counts_once_on_any_worker(pair, diabetes):
    a, b = pair
    _, split = diabetes
    before = value(scrape(a.client), "frugalml_feedback_total")
    predicted = a.post("/predict", json={"instances": split.X_test[:10].tolist()})
    assert predicted.status_code == 200, predicted.text
    ids, predictions = predicted.json()["ids"], predicted.json()["predictions"]
    labels = [{"prediction_id": i, "label": p} for i, p in zip(ids, predictions)]
    # sent to B at once: A may not have shipped the rows yet; the monitor waits for them
    accepted = b.post("/feedback", json=labels[:5])
    assert accepted.status_code == 200, accepted.text
    assert accepted.json() == {"accepted": 5}
    for client in (a, b):  # a second label for any of them is refused on either worker
        again = client.post("/feedback", json=labels[2])
        assert again.status_code == 409 and again.json()["kind"] == "duplicate_feedback", again.text
    assert a.post("/feedback", json=labels[5:]).json() == {"accepted": 5}
    unknown = b.post("/feedback", json={"prediction_id": "0123abcd-1", "label": predictions[0]})
    assert unknown.status_code == 422 and unknown.json()["kind"] == "bad_feedback"
    for client in (a, b):
        samples = scrape_until(client.client, lambda s: value(s, "frugalml_feedback_total") == before + 10)
        assert value(samples, "frugalml_feedback_total") == before + 10
        assert value(samples, "frugalml_quality", metric="accuracy", slice="all") == 1.0


def _settled(client: httpx.Client) -> dict[str, list]:
    """The metrics once the monitor has counted every row sent so far (its total unchanged over 0.5 s)."""
    last = scrape(client)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(0.5)
        samples = scrape(client)
        if value(samples, "frugalml_predicted_rows_total") == value(last, "frugalml_predicted_rows_total"):
            return samples
        last = samples
    return last


def test_a_drift_alert_fires_once_for_a_shift_spread_over_both_workers(pair, workers, diabetes, webhook):
    a, b = pair
    _, split = diabetes
    rng = np.random.default_rng(3)
    samples = _settled(a.client)  # an earlier test's rows may still be on their way to the monitor
    rows_so_far = value(samples, "frugalml_predicted_rows_total")
    windows = value(samples, "frugalml_drift_windows_total")
    partial = int(rows_so_far) % WINDOW  # rows already in the open window: fill it with calm rows first
    if partial:
        assert a.post("/predict", json={"instances": split.X_test[:WINDOW - partial].tolist()}).status_code == 200
        windows += 1
        # each worker ships its rows on its own: B's shifted rows must not reach the monitor before A's calm ones
        filled = scrape_until(a.client, lambda s: value(s, "frugalml_drift_windows_total") >= windows)
        assert value(filled, "frugalml_drift_windows_total") >= windows, "the calm rows never closed their window"
    names = list(split.feature_names)
    shifted = split.X_test.copy()
    shifted[:, names.index("plas")] += 25.0  # glucose up by ~0.8 training std
    shifted[:, names.index("mass")] *= 1.15
    for _ in range(3):  # each window: half its rows through each worker; the alert holds over all three
        rows = shifted[rng.choice(len(shifted), WINDOW, replace=False)]
        assert a.post("/predict", json={"instances": rows[:WINDOW // 2].tolist()}).status_code == 200
        assert b.post("/predict", json={"instances": rows[WINDOW // 2:].tolist()}).status_code == 200
    samples = scrape_until(b.client, lambda s: value(s, "frugalml_drift_windows_total") >= windows + 3)
    assert value(samples, "frugalml_drift_windows_total") == windows + 3
    events = webhook.wait_for(1)
    time.sleep(0.5)
    assert [e["status"] for e in webhook.events] == ["firing"], webhook.events
    assert events[0]["rule"] == "input drift"
    for client in (a, b):
        samples = scrape(client.client)
        assert value(samples, "frugalml_alert_firing", rule="input drift") == 1
        assert value(samples, "frugalml_alerts_fired_total", rule="input drift") == 1
        assert value(samples, "frugalml_feature_drifted", feature="plas") == 1


def test_metrics_totals_equal_the_requests_sent_exactly(pair, diabetes):
    a, b = pair
    _, split = diabetes
    before = scrape(a.client)
    requests = {"/predict": 0, "/invocations": 0}
    rows = 0
    for k in range(60):
        client = (a, b)[k % 2]
        n = 1 + k % 4
        X = split.X_test[k:k + n]
        if k % 3:
            response = client.post("/predict", json={"instances": X.tolist()})
            requests["/predict"] += 1
        else:
            response = client.post("/invocations", json={"dataframe_split": {
                "columns": list(split.feature_names), "data": X.tolist()}})
            requests["/invocations"] += 1
        assert response.status_code == 200, response.text
        rows += n

    def totals(samples: dict) -> tuple:
        return (*(value(samples, "frugalml_requests_total", endpoint=e, code="200") for e in requests),
                value(samples, "frugalml_predicted_rows_total"), value(samples, "frugalml_predicted_class_total"))

    expected = (*(value(before, "frugalml_requests_total", endpoint=e, code="200") + n for e, n in requests.items()),
                value(before, "frugalml_predicted_rows_total") + rows,
                value(before, "frugalml_predicted_class_total") + rows)
    for client in (a, b):  # the same exact totals, whichever worker is scraped
        samples = scrape_until(client.client, lambda s: totals(s) == expected)
        assert totals(samples) == expected
    time.sleep(0.3)  # and nothing counted twice later
    assert totals(scrape(b.client)) == expected
    assert value(scrape(a.client), "frugalml_request_duration_seconds_count", endpoint="/predict") >= requests["/predict"]


def test_a_dead_worker_is_replaced_its_ids_stay_valid_and_sigkilling_the_parent_leaves_no_worker_alive(
        model_dir, diabetes, tmp_path):
    _, split = diabetes
    server = start_workers(model_dir, tmp_path)
    try:
        labels = []
        before = value(scrape(server.client), "frugalml_predicted_rows_total")
        for index in (0, 1):  # ids from both workers: whichever dies, its ids are among them
            client = WorkerClient(server.url, index)
            body = client.post("/predict", json={"instances": split.X_test[:2].tolist()}).json()
            labels += [{"prediction_id": i, "label": p} for i, p in zip(body["ids"], body["predictions"])]
            client.client.close()
        # shipped to the monitor process (the rows counted there) before a worker dies with them
        scrape_until(server.client, lambda s: value(s, "frugalml_predicted_rows_total") >= before + 4)
        server.kill_a_worker()
        for index in (0, 1):  # wait until both answer again
            WorkerClient(server.url, index).client.close()
        assert server.client.post("/feedback", json=labels).json() == {"accepted": 4}

        # then its parent killed with SIGKILL (this server, not one more start): no process it started
        # outlives it, neither the worker it started again nor the one from the start
        children = psutil.Process(server.process.pid).children(recursive=True)
        assert len(children) >= 2
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"still alive after the parent was killed: {[p.pid for p in alive]}"
    finally:
        server.stop()


@pytest.mark.parametrize("workers_value", ["0", "-1", "1.5", "two"])
def test_bad_worker_counts_are_one_line_before_starting(workers_value, tmp_path):
    started = time.monotonic()
    result = cli("serve", str(tmp_path / "no-model"), f"--workers={workers_value}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--workers" in lines[0] and repr(workers_value) in lines[0], result.stderr
    assert time.monotonic() - started < 30 and sys.executable


def test_a_worker_answers_with_nagle_off_as_the_one_process_server_does():
    """A worker's connections have TCP_NODELAY, which asyncio sets only when the listening socket says TCP:
    without it each keep-alive request waited ~40 ms for the client's delayed ACK (21 req/s on one
    connection against 265 with it, measured with wrk)."""
    from frugalml.serve._worker import _listen

    async def accepted_nodelay() -> int:
        listener = _listen("127.0.0.1", 0)
        seen: asyncio.Future = asyncio.get_running_loop().create_future()

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connection, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", listener.getsockname()[1])
            flag = await asyncio.wait_for(seen, 10)
            writer.close()
        return flag

    assert asyncio.run(accepted_nodelay()) == 1

