"""Per-feature series stay bounded for wide inputs: a 784-column model scrapes in under 200 series."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from serve_helpers import ServerProcess, scrape, value

PIXELS = 784
SHIFTED = ("px100", "px400", "px783")  # the columns a client's rows move
CONFIG = "window_rows = 200\nmin_window_rows = 50\ninterval_s = 0.1\n"


def _wide_reference(rows: int = 600, seed: int = 0):
    """A tiny scikit-learn model on 784 numeric columns, and its fingerprint."""
    from sklearn.linear_model import LogisticRegression

    from frugalml.serve import Reference

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, PIXELS))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    names = [f"px{i}" for i in range(PIXELS)]
    model = LogisticRegression(max_iter=300).fit(X, y)
    reference = Reference.build(X, y, names, task="classification", predictions=model.predict(X),
                                classes=[str(c) for c in model.classes_], sample_size=300)
    return model, reference


@pytest.fixture(scope="module")
def wide_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from frugalml.serve import save_model

    folder = tmp_path_factory.mktemp("wide")
    model, reference = _wide_reference()
    save_model(model, reference, folder / "model")
    (folder / "monitoring.toml").write_text(CONFIG)
    process = ServerProcess(str(folder / "model"), "--config", str(folder / "monitoring.toml"),
                            log=folder / "server.log")
    try:
        yield process.wait_ready()
    finally:
        process.stop()


def _send_window(server: ServerProcess, shift: float, seed: int) -> dict[str, list]:
    """Predict one window's rows (``SHIFTED`` columns moved by ``shift`` std) and scrape once it closed."""
    import time

    before = value(scrape(server.client), "frugalml_drift_windows_total")
    X = np.random.default_rng(seed).normal(size=(200, PIXELS))
    for name in SHIFTED:
        X[:, int(name[2:])] += shift
    for start in range(0, len(X), 40):  # 40 rows of 784 values: well under the 1 MB body limit
        response = server.client.post("/predict", json={"instances": np.round(X[start:start + 40], 4).tolist()})
        assert response.status_code == 200, response.text
    deadline = time.monotonic() + 30
    while (samples := scrape(server.client)) and value(samples, "frugalml_drift_windows_total") < before + 1:
        assert time.monotonic() < deadline, "no drift window closed"
        time.sleep(0.1)
    return samples


def _series(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_a_784_feature_model_scrapes_in_under_200_series_and_names_its_drifted_features(wide_server):
    samples = _send_window(wide_server, shift=4.0, seed=1)
    text = wide_server.client.get("/metrics").text
    series = _series(text)
    assert len(series) < 200, f"{len(series)} series"  # 4,239 when every feature had five
    shown = {s.labels["feature"] for s in samples["frugalml_feature_psi"]}
    assert len(shown) == 10 and set(SHIFTED) <= shown
    for name in SHIFTED:
        assert value(samples, "frugalml_feature_drifted", feature=name) == 1
        assert value(samples, "frugalml_data_out_of_range_ratio", feature=name) > 0.5
    assert {s.labels["feature"] for s in samples["frugalml_data_out_of_range_ratio"]} == shown
    assert value(samples, "frugalml_input_features") == PIXELS
    assert value(samples, "frugalml_features_drifted") >= len(SHIFTED)
    assert value(samples, "frugalml_feature_psi_max") == max(s.value for s in samples["frugalml_feature_psi"])
    assert 0 < value(samples, "frugalml_feature_psi_mean") < value(samples, "frugalml_feature_psi_max")
    assert value(samples, "frugalml_features_out_of_range") >= len(SHIFTED)

    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: `make system-deps` installs the prometheus package"
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), \
        checked.stdout + checked.stderr

    # a window without drift keeps the same features on show: their series do not churn
    calm = _send_window(wide_server, shift=0.0, seed=2)
    assert {s.labels["feature"] for s in calm["frugalml_feature_psi"]} == shown
    assert value(calm, "frugalml_feature_drifted") == 0


# -- the selection, without a server -------------------------------------------------------


def _drift(psis, drifted=()):
    from frugalml.serve import FeatureDrift

    return [FeatureDrift(f"f{i}", psi, 0.1, 0.5, i in drifted) for i, psi in enumerate(psis)]


def test_narrow_models_show_every_feature():
    from frugalml.serve._metrics import shown_features

    features = _drift([0.01] * 8)
    assert shown_features(features, [0.0] * 8, limit=10) == tuple(range(8))
    assert shown_features(features, [0.0] * 8, limit=8) == tuple(range(8))
    assert shown_features(features, [0.0] * 8, limit=0) == ()


def test_drifted_then_out_of_range_then_previously_shown_then_by_psi():
    from frugalml.serve._metrics import shown_features

    psis = [0.01, 0.2, 0.02, 0.9, 0.05, float("nan"), 0.03, 0.04]
    features = _drift(psis, drifted={6})
    out_of_range = [0.0, 0.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert shown_features(features, out_of_range, limit=3) == (2, 3, 6)  # drifted, out of range, largest PSI
    # f0 was shown before: it stays ahead of a larger PSI, so a calm window changes nothing
    assert shown_features(features, out_of_range, limit=3, previous={"f0"}) == (0, 2, 6)
    # a NaN PSI never pushes a feature forward
    assert 5 not in shown_features(features, [0.0] * 8, limit=7)


def test_the_collector_chooses_once_per_window_and_honours_its_limit():
    from frugalml.serve import ServingMonitor
    from frugalml.serve._metrics import MonitorCollector
    from frugalml.serve._model import ServedModel

    model, reference = _wide_reference(rows=300)
    monitor = ServingMonitor(reference, {"window_rows": 100})
    served = ServedModel(model=model, reference=reference, uri="wide", path=Path("."))
    collector = MonitorCollector(lambda: served, lambda: monitor, max_feature_series=3)
    X = np.random.default_rng(3).normal(size=(100, PIXELS))
    X[:, 42] += 5
    monitor.observe(X, model.predict(X))
    monitor.process()
    families = {f.name: f for f in collector.collect()}
    shown = [s.labels["feature"] for s in families["frugalml_feature_psi"].samples]
    assert len(shown) == 3 and "px42" in shown
    again = {f.name: f for f in collector.collect()}
    assert [s.labels["feature"] for s in again["frugalml_feature_drifted"].samples] == shown
    assert again["frugalml_input_features"].samples[0].value == PIXELS
    assert monitor.values()["data.out_of_range_features"] >= 1  # aggregates for alert rules too
    assert monitor.values()["drift.psi_mean"] > 0
    assert "drift.psi.px700" in monitor.values()  # alert rules still see every feature


def test_latency_series_appear_with_an_endpoints_first_request():
    from frugalml.serve._metrics import ServerMetrics

    metrics = ServerMetrics()
    before = {s.labels.get("endpoint") for m in metrics.registry.collect() for s in m.samples
              if s.name.startswith("frugalml_request_duration_seconds")}
    assert before == set()
    metrics.observe(metrics.endpoint("/predict"), 200, 0.001)
    after = {(s.labels.get("endpoint"), s.labels.get("code")) for m in metrics.registry.collect() for s in m.samples
             if s.name in ("frugalml_request_duration_seconds_count", "frugalml_requests_total")}
    assert ("/predict", None) in after and ("/health", "200") in after  # request counters exist from the start
    assert ("/health", None) not in after


def test_max_feature_series_is_validated():
    from frugalml.exceptions import ConfigError
    from frugalml.serve import ServerSettings

    assert ServerSettings().max_feature_series == 10
    assert ServerSettings(max_feature_series=0).max_feature_series == 0
    for bad in (-1, 2.5, True, "10"):
        with pytest.raises(ConfigError, match="max_feature_series"):
            ServerSettings(max_feature_series=bad)


@pytest.mark.parametrize("count", ["-1", "100001"])
def test_a_bad_max_feature_series_is_one_line(count, capsys):
    from frugalml.cli import main

    assert main(["serve", "models:/tiny@champion", "--max-feature-series", count]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "'max_feature_series'" in error and "[0, 100000]" in error, error
