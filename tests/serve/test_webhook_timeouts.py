"""Alert webhooks that are down or never answer: the server keeps serving, and the log
says so in one line per webhook within seconds (a real server process, real sockets)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from frugalml.serve import AlertEvent, WebhookNotifier
from serve_helpers import ADMIN_TOKEN, WebhookReceiver, free_port, scrape, value


@pytest.fixture
def blackhole():
    """A port whose connections the kernel accepts and nobody answers."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    yield f"http://127.0.0.1:{hole.getsockname()[1]}/alerts"
    hole.close()


def test_the_server_keeps_serving_while_its_webhooks_are_down_and_logs_each_once(server, diabetes, blackhole):
    _, split = diabetes
    closed = f"http://127.0.0.1:{free_port()}/alerts"
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    original = server.client.get("/admin/monitoring-config", headers=admin).json()
    config = {"window_rows": 50, "min_window_rows": 50, "interval_s": 0.05, "webhooks": [closed, blackhole],
              "alerts": [{"name": "always", "metric": "drift.psi_max", "op": ">=", "threshold": 0}]}
    put = server.client.put("/admin/monitoring-config", json=config, headers=admin)
    assert put.status_code == 200, put.text
    try:
        before = value(scrape(server.client), "frugalml_webhook_failures_total")
        sent = time.monotonic()
        assert server.client.post("/predict", json={"instances": split.X_test[:50].tolist()}).status_code == 200
        slowest = 0.0
        while server.log().count(" failed for alert ") < 2 and time.monotonic() - sent < 15:
            started = time.monotonic()  # the server answers while a webhook hangs
            assert server.client.get("/health").status_code == 200
            assert server.client.post("/predict", json={"instances": split.X_test[:5].tolist()}).status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.1)
        logged = time.monotonic() - sent
        log = server.log()
        assert logged < 10, f"the webhook failures were logged {logged:.1f} s after the alert:\n{log}"
        assert slowest < 2, f"a request took {slowest:.1f} s while a webhook hung"
        assert log.count(f"webhook {closed} failed") == 1 and "Connection refused" in log, log
        assert log.count(f"webhook {blackhole} failed") == 1 and "no answer within 5 s" in log, log
        assert "Traceback" not in log
        assert value(scrape(server.client), "frugalml_webhook_failures_total") == before + 2
    finally:
        server.client.put("/admin/monitoring-config", json=original, headers=admin)


def _event(number: int) -> AlertEvent:
    return AlertEvent(f"rule-{number}", "firing", "drift.psi_max", 1.0, ">=", 0.0, time.time())


def test_an_outage_is_logged_once_and_a_webhook_that_hangs_delays_no_other(blackhole, caplog):
    receiver = WebhookReceiver()
    closed = f"http://127.0.0.1:{free_port()}/alerts"
    notifier = WebhookNotifier([blackhole, closed, receiver.url], timeout_s=2)
    try:
        with caplog.at_level(logging.DEBUG, logger="frugalml.serve.alerts"):
            started = time.monotonic()
            for number in range(3):
                notifier.notify(_event(number))
            assert len(receiver.wait_for(3, timeout=5)) == 3  # not held up by the hanging one
            assert time.monotonic() - started < 1.5
            notifier.close()
    finally:
        receiver.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, errors  # one line per webhook that is down, not one per alert
    assert any(closed in e and "Connection refused" in e for e in errors)
    assert any(blackhole in e and "no answer within 2 s" in e for e in errors)
    assert notifier.sent == 3 and notifier.failures >= 4  # the closed port's three, the blackhole's first


def test_a_webhook_that_comes_back_is_said_once(caplog):
    port = free_port()
    notifier = WebhookNotifier([f"http://127.0.0.1:{port}/alerts"], timeout_s=2)
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with caplog.at_level(logging.INFO, logger="frugalml.serve.alerts"):
        notifier.notify(_event(0))
        deadline = time.monotonic() + 5
        while notifier.failures < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        receiver = ThreadingHTTPServer(("127.0.0.1", port), Handler)  # the receiver starts
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        try:
            for number in (1, 2):
                notifier.notify(_event(number))
            notifier.close()
        finally:
            receiver.shutdown()
            receiver.server_close()
    assert [event["rule"] for event in received] == ["rule-1", "rule-2"]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("failed" in m for m in messages) == 1 and sum("takes alerts again" in m for m in messages) == 1
