"""The monitoring parts without HTTP: reference, PSI/KS, windows, alerts, quality, config."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from frugalml.exceptions import ConfigError
from frugalml.serve import (
    AlertEvaluator,
    AlertRule,
    DuplicateFeedback,
    FeedbackError,
    ServingMonitor,
    Notifier,
    Reference,
    WebhookNotifier,
    as_monitoring_config,
    feature_psi,
    ks,
    psi,
)
from serve_helpers import WebhookReceiver, free_port


class Collect(Notifier):
    def __init__(self) -> None:
        self.events = []

    def notify(self, event) -> None:
        self.events.append(event)


@pytest.fixture(scope="module")
def reference(diabetes, model):
    _, split = diabetes
    return Reference.build(split.X_train, split.y_train, split.feature_names, task="classification",
                           predictions=model.predict(split.X_train), classes=("tested_negative", "tested_positive"))


def test_reference_round_trips_and_fingerprints_the_data(reference, diabetes, tmp_path):
    _, split = diabetes
    loaded = Reference.load(reference.save(tmp_path / "ref.json"))
    assert loaded == reference
    assert [f["name"] for f in loaded.schema] == list(split.feature_names)
    assert loaded.schema[1] == {"name": "plas", "dtype": "int64"} and loaded.schema[5]["dtype"] == "float64"
    assert sum(loaded.features[0].proportions) == pytest.approx(1.0)
    changed = split.X_train.copy()
    changed[0, 0] += 1
    other = Reference.build(changed, split.y_train, split.feature_names, task="regression", predictions=changed[:, 0])
    assert other.training_sha256 != reference.training_sha256


def test_psi_and_ks_separate_shifted_from_same_distribution(reference, diabetes):
    _, split = diabetes
    plas = reference.features[1]
    same, shifted = split.X_test[:, 1], split.X_test[:, 1] + 30
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert math.isfinite(psi([0.5, 0.5], [1.0, 0.0]))  # an empty bin stays finite
    assert feature_psi(plas, same) < 0.1 < 0.25 < feature_psi(plas, shifted)
    assert ks(np.asarray(plas.sample), same)[1] > 0.05 > 1e-6 > ks(np.asarray(plas.sample), shifted)[1]


def test_ks_matches_scipy(diabetes):
    from scipy.stats import ks_2samp

    _, split = diabetes
    for j in range(split.X_train.shape[1]):
        reference, window = np.sort(split.X_train[:, j]), split.X_test[:150, j] + (j % 3) * 2.0
        statistic, pvalue = ks(reference, window)
        expected = ks_2samp(reference, window, method="asymp")
        assert statistic == pytest.approx(expected.statistic, abs=1e-12)
        assert pvalue == pytest.approx(expected.pvalue, abs=0.03)


def test_windows_close_every_window_rows_and_drift_is_flagged(reference, diabetes, model):
    _, split = diabetes
    monitor = ServingMonitor(reference, {"window_rows": 100}, model=model)
    X = split.X_test[:230]
    monitor.observe(X, model.predict(X))
    monitor.process()
    assert monitor.windows == 2 and monitor.flagged_windows == 0
    assert monitor.state().class_counts == dict(zip(*np.unique(model.predict(X), return_counts=True)))
    shifted = split.X_test[:100].copy()
    shifted[:, 1] += 40
    monitor.observe(shifted[:70], model.predict(shifted[:70]))  # completes the pending 30-row window, then 40 more
    monitor.observe(shifted[70:], model.predict(shifted[70:]))
    monitor.process()
    values = monitor.values()
    assert monitor.windows == 3
    assert values["drift.psi.plas"] > 0.25 and values["drift.detected"] == 1
    assert values["nonfinite.weights"] == 0 and values["process.memory_mb"] > 1


def test_out_of_range_and_constant_inputs_are_measured_per_window_and_can_alert(reference, diabetes, model):
    _, split = diabetes
    events = Collect()
    rule = {"name": "out of range", "metric": "data.out_of_range", "op": ">", "threshold": 0.1}
    monitor = ServingMonitor(reference, {"window_rows": 100, "alerts": [rule]}, model=model, notifiers=[events])
    held_out = split.X_test[:100]
    monitor.observe(held_out, model.predict(held_out))
    monitor.process()
    values = monitor.values()
    assert values["data.out_of_range"] < 0.05 and values["data.constant_features"] == 0  # the training distribution
    assert not events.events
    odd = split.X_test[100:200].copy()
    odd[:30, 5] = reference.features[5].max + 10.0  # mass above anything in training, in 30 rows
    odd[:, 0] = 3.0  # preg constant in the window
    monitor.observe(odd, model.predict(odd))
    monitor.process()
    values = monitor.values()
    assert values["data.out_of_range"] >= 0.3 and values["data.out_of_range.mass"] >= 0.3
    assert values["data.out_of_range.plas"] < 0.05 and values["data.constant_features"] == 1
    assert [e.rule for e in events.events] == ["out of range"]


def test_accuracy_is_estimated_before_any_label_and_drops_under_covariate_shift(diabetes, model):
    """CBPE: the held-out split's accuracy, estimated from calibrated confidence, then measured from labels."""
    from frugalml.registry import build_reference
    from frugalml.serve._estimate import confidences

    data, split = diabetes
    reference = build_reference(model, data, split)  # calibrated on the training split, not the held-out one
    rows = len(split.X_test)
    monitor = ServingMonitor(reference, {"window_rows": rows, "quality_window": rows})
    predicted, confidence = confidences(model, split.X_test)
    assert list(predicted) == list(model.predict(split.X_test))  # one predict_proba gives both
    ids = monitor.observe(split.X_test, predicted, confidence)
    monitor.process()
    estimated = monitor.values()["quality.estimated_accuracy"]
    assert "quality.accuracy" not in monitor.values()  # no label yet
    truth = np.asarray(model.steps[-1][1].classes_)[split.y_test]
    for prediction_id, label in zip(ids, truth):
        monitor.feedback(prediction_id, str(label))
    monitor.process()
    measured = monitor.values()["quality.accuracy"]
    assert abs(estimated - measured) <= 0.05, (estimated, measured)
    shifted = split.X_test.copy()
    shifted[:, 1] += 40  # glucose up 40 mg/dl: a covariate shift, before any label of it
    monitor.observe(shifted, *confidences(model, shifted))
    monitor.process()
    assert monitor.values()["quality.estimated_accuracy"] < estimated - 0.03


def test_alerts_wait_for_the_duration_fire_once_and_resolve_once():
    evaluator = AlertEvaluator([AlertRule(name="slow", metric="latency.p99_ms", op=">", threshold=50, for_s=10)])
    history = {"latency.p99_ms": [80.0]}
    assert evaluator.evaluate(history, now=0) == []
    assert evaluator.evaluate(history, now=5) == []
    fired = evaluator.evaluate(history, now=10)
    assert [(e.rule, e.status, e.value) for e in fired] == [("slow", "firing", 80.0)]
    assert evaluator.evaluate(history, now=11) == [] and evaluator.evaluate(history, now=60) == []
    resolved = evaluator.evaluate({"latency.p99_ms": [80.0, 20.0]}, now=61)
    assert [e.status for e in resolved] == ["resolved"]
    assert evaluator.fired_total == {"slow": 1}


def test_alert_window_averages_and_wildcards_match_any_metric():
    rules = [AlertRule(name="two", metric="drift.detected", op=">=", threshold=1, window=2),
             AlertRule(name="any", metric="drift.ks_pvalue.*", op="<", threshold=0.001)]
    evaluator = AlertEvaluator(rules)
    assert evaluator.evaluate({"drift.detected": [0.0, 1.0]}, 0) == []
    history = {"drift.detected": [1.0, 1.0], "drift.ks_pvalue.a": [0.5], "drift.ks_pvalue.b": [1e-9]}
    events = evaluator.evaluate(history, 1)
    assert {(e.rule, e.metric) for e in events} == {("two", "drift.detected"), ("any", "drift.ks_pvalue.b")}


def test_monitor_sends_alerts_to_notifiers_and_webhooks(reference, diabetes, model):
    _, split = diabetes
    receiver = WebhookReceiver()
    collect = Collect()
    try:
        config = {"window_rows": 100, "webhooks": [receiver.url],
                  "alerts": [{"name": "glucose", "metric": "custom.glucose", "op": ">", "threshold": 150}],
                  "custom_metrics": {"glucose": lambda X, predictions: float(X[:, 1].mean())}}
        monitor = ServingMonitor(reference, config, notifiers=[collect])
        X = split.X_test[:100].copy()
        X[:, 1] = 200
        monitor.observe(X, model.predict(X))
        monitor.process()
        assert [e.status for e in collect.events] == ["firing"]
        assert receiver.wait_for(1)[0]["rule"] == "glucose"
        monitor.stop()
    finally:
        receiver.close()


def test_a_failing_custom_metric_and_webhook_do_not_stop_monitoring(reference, diabetes, model):
    _, split = diabetes
    dead = f"http://127.0.0.1:{free_port()}/alerts"

    def broken(X, predictions):
        raise RuntimeError("boom")

    monitor = ServingMonitor(reference, {"window_rows": 50, "webhooks": [dead], "webhook_timeout_s": 1,
                                         "custom_metrics": {"broken": broken},
                                         "alerts": [{"name": "any", "metric": "drift.psi_max", "op": ">=", "threshold": 0}]})
    X = split.X_test[:50]
    monitor.observe(X, model.predict(X))
    monitor.process()
    assert math.isnan(monitor.values()["custom.broken"]) and monitor.windows == 1
    webhooks = next(n for n in monitor._notifiers if isinstance(n, WebhookNotifier))
    webhooks.close()
    assert webhooks.failures == 1


def test_quality_per_slice_and_nonfinite_weights(reference, model, diabetes):
    _, split = diabetes
    monitor = ServingMonitor(reference, {"quality_window": 10})
    ids = monitor.observe(split.X_test[:4], np.array(["tested_negative", "tested_positive"] * 2))
    for pid, label, group in zip(ids, ["tested_negative", "tested_negative", "tested_negative", "tested_positive"],
                                 ["a", "a", "b", "b"]):
        monitor.feedback(pid, label, {"group": group})
    monitor.process()
    values = monitor.values()
    assert values["quality.accuracy"] == 0.75
    assert values["quality.accuracy.group=a"] == 0.5 and values["quality.accuracy.group=b"] == 1.0
    assert values["quality.accuracy_gap.group"] == 0.5
    with pytest.raises(DuplicateFeedback, match="already has its label"):
        monitor.feedback(ids[3], "tested_negative")  # idempotent: the first label counts, once
    monitor.process()
    assert monitor.values()["quality.accuracy"] == 0.75
    with pytest.raises(FeedbackError, match="unknown prediction_id"):
        monitor.feedback("abc-1", "tested_negative")
    unlabelled = monitor.observe(split.X_test[:1], np.array(["tested_negative"]))
    with pytest.raises(FeedbackError, match="classes"):
        monitor.feedback(unlabelled[0], "yes")
    broken = copy.deepcopy(model)
    broken.steps[-1][1].coef_[0, 0] = np.nan
    monitor.configure({}, model=broken)
    monitor.process()
    assert monitor.values()["nonfinite.weights"] == 1


def test_quality_is_as_of_the_last_label_not_the_last_processing(reference, diabetes):
    """A scrape right after feedback shows it (the multi-worker test once read a stale 0 here)."""
    _, split = diabetes
    monitor = ServingMonitor(reference, {"quality_window": 10})
    ids = monitor.observe(split.X_test[:2], np.array(["tested_negative", "tested_positive"]))
    monitor.feedback(ids[0], "tested_negative")
    assert monitor.values()["quality.accuracy"] == 1.0 and monitor.state().values["quality.accuracy"] == 1.0
    monitor.feedback(ids[1], "tested_negative")
    assert monitor.state().values["quality.accuracy"] == 0.5 and monitor.state().feedback == 2


def test_a_new_config_keeps_issued_prediction_ids_and_a_smaller_log_drops_the_oldest(reference, diabetes):
    _, split = diabetes
    monitor = ServingMonitor(reference, {"feedback_capacity": 10})
    old = monitor.observe(split.X_test[:6], np.array(["tested_negative"] * 6))
    new = monitor.observe(split.X_test[:4], np.array(["tested_positive"] * 4))
    monitor.configure({})  # back to the default capacity, as `PUT /admin/monitoring-config {}` does
    monitor.feedback(old[0], "tested_negative")
    monitor.configure({"feedback_capacity": 4})
    monitor.feedback(new[0], "tested_positive")
    with pytest.raises(FeedbackError, match="too old .*latest 4"):
        monitor.feedback(old[-1], "tested_negative")


def test_regression_rmse_and_prediction_histogram():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3))
    reference = Reference.build(X, X[:, 0], ["a", "b", "c"], task="regression", predictions=X[:, 0])
    monitor = ServingMonitor(reference, {"window_rows": 100})
    predictions = X[:100, 0].copy()
    predictions[0] = np.inf
    ids = monitor.observe(X[:100], predictions)
    monitor.feedback(ids[1], float(predictions[1]) + 2.0)
    with pytest.raises(FeedbackError, match="finite number"):
        monitor.feedback(ids[2], "high")
    monitor.process()
    state = monitor.state()
    assert monitor.values()["quality.rmse"] == pytest.approx(2.0)
    assert state.nonfinite_totals[("output", "inf")] == 1 and monitor.values()["nonfinite.outputs"] == 1
    edges, counts, _ = state.prediction_buckets
    assert sum(counts) == 99 and len(counts) == len(edges) + 1


def test_config_errors_are_one_line_and_name_the_parameter(tmp_path):
    with pytest.raises(ConfigError, match="Unknown key\\(s\\) \\['windows'\\] in the monitoring config"):
        as_monitoring_config({"windows": 3})
    with pytest.raises(ConfigError, match="'window_rows' parameter of MonitoringConfig must be an int"):
        as_monitoring_config({"window_rows": 0})
    with pytest.raises(ConfigError, match="'op' must be one of"):
        as_monitoring_config({"alerts": [{"metric": "drift.share", "op": "=>", "threshold": 1}]})
    with pytest.raises(ConfigError, match="'window_rows' parameter of MonitoringConfig must be an int in the range"):
        as_monitoring_config({"window_rows": 10**30})
    with pytest.raises(ConfigError, match="needs metric and threshold"):
        as_monitoring_config({"alerts": [{"name": "x"}]})
    with pytest.raises(ConfigError, match="unknown metric 'latency.p90_ms'; use one of"):
        as_monitoring_config({"alerts": [{"metric": "latency.p90_ms", "threshold": 1}]})
    with pytest.raises(ConfigError, match="cannot import"):
        as_monitoring_config({"custom_metrics": {"x": "no_such_module:f"}}).custom_functions()
    file = tmp_path / "monitoring.toml"
    file.write_text('window_rows = 300\nwebhooks = "http://127.0.0.1:9/a"\n[[alerts]]\nmetric = "drift.share"\n'
                    'threshold = 0.5\n')
    config = as_monitoring_config(file)
    assert config.window_rows == 300 and config.webhooks == ("http://127.0.0.1:9/a",)
    assert config.alerts[0].name == "drift.share"
    file.write_text("window_rows = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        as_monitoring_config(file)
