"""`frugalml serve --max-feature-series N` (needs the one-line _app.py wiring: MonitorCollector(..., settings.max_feature_series))."""

from __future__ import annotations

from test_bounded_metrics import CONFIG, SHIFTED, _send_window, _wide_reference

from serve_helpers import ServerProcess


def test_the_flag_sets_how_many_features_get_series(tmp_path):
    from frugalml.serve import save_model

    model, reference = _wide_reference()
    save_model(model, reference, tmp_path / "model")
    (tmp_path / "monitoring.toml").write_text(CONFIG)
    process = ServerProcess(str(tmp_path / "model"), "--config", str(tmp_path / "monitoring.toml"),
                            "--max-feature-series", "3", log=tmp_path / "server.log")
    try:
        samples = _send_window(process.wait_ready(), shift=4.0, seed=1)
    finally:
        process.stop()
    assert {s.labels["feature"] for s in samples["frugalml_feature_psi"]} == set(SHIFTED)
