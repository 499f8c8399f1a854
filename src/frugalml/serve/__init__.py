"""Serving and monitoring: the prediction API, drift, quality, alerts, Prometheus metrics.

The monitoring parts (:class:`ServingMonitor`, :class:`Reference`, drift functions, alert
rules) are plain Python and numpy; the HTTP app needs the ``serve`` extra
(``pip install 'frugalml[serve]'``) and is imported only by :func:`create_app`.

Example:
    >>> from frugalml.serve import load_model, ServingMonitor
    >>> served = load_model("models:/demo-diabetes-svm@champion")    # doctest: +SKIP
    >>> monitor = ServingMonitor(served.reference, {"window_rows": 200})    # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from frugalml.serve._alerts import AlertEvaluator, AlertEvent, LogNotifier, Notifier, WebhookNotifier
from frugalml.serve._config import AlertRule, MonitoringConfig, as_alert_rule, as_monitoring_config
from frugalml.serve._drift import FeatureDrift, WindowDrift, feature_psi, ks, psi, window_drift
from frugalml.serve._model import (
    ModelLoadError, ServedModel, extra_files, load_model, load_predictor, pip_requirements, reference_from_table,
    release, save_model,
)
from frugalml.serve._monitor import ServingMonitor, MonitorState
from frugalml.serve._quality import DuplicateFeedback, FeedbackError
from frugalml.serve._reference import FeatureReference, Reference, encode_table, sha256_arrays
from frugalml.serve._settings import ServerSettings, parse_rate, registry_alias

# Imported on first use (PEP 562): the server's, the CLI's and the registry's helpers that need
# more than the monitoring core (uvicorn, Ray, rich's dashboard).
_LAZY = {
    **dict.fromkeys(("run_server", "running_servers"), "frugalml.serve._server"),
    "challenger_settings": "frugalml.serve._challenger",
    "ray_settings": "frugalml.serve._ray",
    **dict.fromkeys(("LATENCY_BUDGET", "ServedSlo", "prometheus_rules"), "frugalml.serve._slo"),
    **dict.fromkeys(("dashboard", "render"), "frugalml.serve._watch"),
    **dict.fromkeys(("Calibration", "confidences"), "frugalml.serve._estimate"),
    "as_classifier": "frugalml.serve._classifier",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def create_app(served: ServedModel, settings: ServerSettings | None = None, config: Any = None, *,
               loader: Any = None) -> Any:
    """The FastAPI app serving ``served``; ``config`` defaults to the model's monitoring config."""
    from frugalml.serve._app import create_app as _create_app

    return _create_app(served, settings, config, loader=loader)


__all__ = [
    "AlertEvaluator",
    "AlertEvent",
    "AlertRule",
    "Calibration",
    "DuplicateFeedback",
    "FeatureDrift",
    "FeatureReference",
    "FeedbackError",
    "LATENCY_BUDGET",
    "LogNotifier",
    "ModelLoadError",
    "MonitorState",
    "MonitoringConfig",
    "Notifier",
    "Reference",
    "ServedModel",
    "ServedSlo",
    "ServerSettings",
    "ServingMonitor",
    "WebhookNotifier",
    "WindowDrift",
    "as_alert_rule",
    "as_classifier",
    "as_monitoring_config",
    "challenger_settings",
    "confidences",
    "create_app",
    "dashboard",
    "encode_table",
    "extra_files",
    "feature_psi",
    "ks",
    "load_model",
    "load_predictor",
    "parse_rate",
    "pip_requirements",
    "prometheus_rules",
    "psi",
    "ray_settings",
    "reference_from_table",
    "registry_alias",
    "release",
    "render",
    "run_server",
    "running_servers",
    "save_model",
    "sha256_arrays",
    "window_drift",
]
