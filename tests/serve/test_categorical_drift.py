"""Drift of a text (categorical) feature, end to end: a built-in model on diabetes with ``mass`` binned
into WHO BMI classes (``bmi_class``), served by a real server; when ``normal`` goes from 14% of the
rows to 80%, its PSI (over categories) and chi-squared test flag it and the alert fires once on a
webhook receiver, then resolves on same-distribution traffic."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from frugalml.serve import Reference
from serve_helpers import ServerProcess, WebhookReceiver, scrape, value

WINDOW = 150
FEATURE = "bmi_class"


def bmi_table() -> pd.DataFrame:
    """diabetes with ``mass`` replaced by its WHO BMI class (as in tests/test_categorical_builtin.py)."""
    frame = pd.read_csv(Path(os.environ["FRUGALML_DATA_DIR"]) / "diabetes.csv.gz")
    classes = pd.cut(frame["mass"], [-np.inf, 18.5, 25, 30, np.inf], right=False,
                     labels=["underweight", "normal", "overweight", "obese"])
    frame.insert(frame.columns.get_loc("mass"), FEATURE, classes.astype(str))
    return frame.drop(columns="mass")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """A model saved by the functions ``frugalml register`` uses; its raw training rows; a webhook; a server."""
    from frugalml.registry import build_reference, fit_model, raw_split
    from frugalml.serve import save_model
    from frugalml.workloads import prepare_dataset, resolve_dataset

    folder = tmp_path_factory.mktemp("categorical-drift")
    bmi_table().to_csv(folder / "diabetes_bmi.csv.gz", index=False)
    data = prepare_dataset(resolve_dataset(path=folder / "diabetes_bmi.csv.gz"), seed=0)
    split = raw_split(data)
    model = fit_model(data, "logistic_regression", {"batch_size": 32, "learning_rate": 0.01})
    model_dir = save_model(model, build_reference(model, data, split), folder / "model")
    webhook = WebhookReceiver()
    (folder / "monitoring.toml").write_text(f"""
window_rows = {WINDOW}
interval_s = 0.05
webhooks = ["{webhook.url}"]

[[alerts]]
name = "bmi mix"
metric = "drift.psi.{FEATURE}"
op = ">"
threshold = 0.25
""")
    server = ServerProcess(str(model_dir), "--config", str(folder / "monitoring.toml"), log=folder / "server.log")
    try:
        yield server.wait_ready(), split, webhook, model_dir
    finally:
        server.stop()
        webhook.close()


def _send_window(server, rows: np.ndarray, names: tuple[str, ...]) -> dict[str, list]:
    """POST one whole window of raw rows and wait until the monitor has closed it; the metrics then."""
    records = [{n: (v if n == FEATURE else float(v)) for n, v in zip(names, row)} for row in rows]
    before = value(scrape(server.client), "frugalml_drift_windows_total")
    response = server.client.post("/predict", json={"rows": records})
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 15
    while value(samples := scrape(server.client), "frugalml_drift_windows_total") < before + 1:
        assert time.monotonic() < deadline, "the monitor did not close the window"
        time.sleep(0.05)
    return samples


def test_the_reference_has_one_bin_per_category(served):
    _, split, _, model_dir = served
    reference = Reference.load(model_dir / "extra_files" / "frugalml_reference.json")
    feature = reference.features[split.feature_names.index(FEATURE)]
    assert feature.categorical and feature.categories == ("normal", "obese", "overweight", "underweight")
    training = split.X_train[:, split.feature_names.index(FEATURE)]
    shares = [np.mean(training == c) for c in feature.categories]
    np.testing.assert_allclose(feature.proportions, [*shares, 0.0])  # the last bin: categories unseen in training
    assert 0.10 < shares[0] < 0.20  # normal


def test_a_shifted_category_mix_raises_the_feature_drift_and_fires_the_alert(served):
    server, split, webhook, _ = served
    names, column = split.feature_names, split.feature_names.index(FEATURE)
    rng = np.random.default_rng(3)

    def window() -> np.ndarray:
        return split.X_train[rng.choice(len(split.X_train), WINDOW, replace=False)].copy()

    same = _send_window(server, window(), names)
    baseline_psi = value(same, "frugalml_feature_psi", feature=FEATURE)
    assert value(same, "frugalml_feature_drifted", feature=FEATURE) == 0 and baseline_psi < 0.1
    assert value(same, "frugalml_feature_ks_pvalue", feature=FEATURE) > 0.05  # chi-squared over categories
    assert webhook.events == []

    shifted = window()
    shifted[: int(0.8 * WINDOW), column] = "normal"  # about 14% of the rows in training, 80% now
    samples = _send_window(server, shifted, names)
    psi = value(samples, "frugalml_feature_psi", feature=FEATURE)
    assert psi > 0.25 and psi > 10 * baseline_psi
    assert value(samples, "frugalml_feature_drifted", feature=FEATURE) == 1
    assert value(samples, "frugalml_feature_ks_pvalue", feature=FEATURE) < 1e-6
    assert value(samples, "frugalml_feature_ks_statistic", feature=FEATURE) > 0.5  # share moved: total variation
    events = webhook.wait_for(1)
    assert [(e["rule"], e["status"], e["metric"]) for e in events] == [("bmi mix", "firing", f"drift.psi.{FEATURE}")]
    assert events[0]["value"] == pytest.approx(psi)
    assert value(scrape(server.client), "frugalml_alert_firing", rule="bmi mix") == 1

    _send_window(server, window(), names)
    events = webhook.wait_for(2)
    assert [e["status"] for e in events] == ["firing", "resolved"]
