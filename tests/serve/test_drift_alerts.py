"""Drift alerts end to end: a real server, a webhook receiver on 127.0.0.1, real held-out data.

The false-alarm rate is measured over 20 windows of 150 rows drawn from the held-out
test split (same distribution as training); then shifted windows must fire the alert
once (de-duplicated while it holds) and same-distribution data must resolve it.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from serve_helpers import ADMIN_TOKEN, WebhookReceiver, scrape, value

WINDOW = 150
NULL_WINDOWS = 20


@pytest.fixture
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def _send_window(server, X: np.ndarray) -> None:
    before = value(scrape(server.client), "frugalml_drift_windows_total")
    response = server.client.post("/predict", json={"instances": X.tolist()})
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 15
    while value(scrape(server.client), "frugalml_drift_windows_total") < before + 1:
        assert time.monotonic() < deadline, "the monitor did not close the window"
        time.sleep(0.02)


def test_drift_alert_fires_on_shifted_data_and_not_on_same_distribution(server, diabetes, webhook, capsys):
    _, split = diabetes
    config = {
        "window_rows": WINDOW, "interval_s": 0.05, "webhooks": [webhook.url],
        # two drifted windows in a row: one chance false alarm cannot fire it
        "alerts": [{"name": "input drift", "metric": "drift.detected", "op": ">=", "threshold": 1, "window": 2}],
    }
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    original = server.client.get("/admin/monitoring-config", headers=admin).json()
    put = server.client.put("/admin/monitoring-config", json=config, headers=admin)
    assert put.status_code == 200, put.text
    try:
        _null_then_shifted(server, split, webhook, capsys)
    finally:
        server.client.put("/admin/monitoring-config", json=original, headers=admin)


def _null_then_shifted(server, split, webhook, capsys) -> None:

    rng = np.random.default_rng(7)
    flagged_before = value(scrape(server.client), "frugalml_drift_flagged_windows_total")
    for _ in range(NULL_WINDOWS):
        _send_window(server, split.X_test[rng.choice(len(split.X_test), WINDOW, replace=False)])
    samples = scrape(server.client)
    false_alarms = value(samples, "frugalml_drift_flagged_windows_total") - flagged_before
    rate = false_alarms / NULL_WINDOWS
    with capsys.disabled():
        print(f"\nfalse-alarm rate over {NULL_WINDOWS} same-distribution windows of {WINDOW} rows: {rate:.2f}")
    assert rate <= 0.1
    time.sleep(0.3)
    assert webhook.events == []
    assert value(samples, "frugalml_alert_firing", rule="input drift") == 0

    names = list(split.feature_names)
    shifted = split.X_test.copy()
    shifted[:, names.index("plas")] += 25.0  # glucose up by ~0.8 training std
    shifted[:, names.index("mass")] *= 1.15
    for _ in range(3):  # the alert holds over all three; it must fire once
        _send_window(server, shifted[rng.choice(len(shifted), WINDOW, replace=False)])
    events = webhook.wait_for(1)
    time.sleep(0.3)
    assert [e["status"] for e in webhook.events] == ["firing"]
    assert events[0]["rule"] == "input drift" and events[0]["value"] == 1
    samples = scrape(server.client)
    assert value(samples, "frugalml_alert_firing", rule="input drift") == 1
    assert value(samples, "frugalml_feature_drifted", feature="plas") == 1
    assert value(samples, "frugalml_custom_metric", name="mean_glucose") > split.X_train[:, 1].mean() + 10

    _send_window(server, split.X_test[rng.choice(len(split.X_test), WINDOW, replace=False)])
    events = webhook.wait_for(2)
    assert [e["status"] for e in events] == ["firing", "resolved"]
