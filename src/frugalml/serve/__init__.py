"""Serving and monitoring: the prediction API, drift, quality, alerts, Prometheus metrics.

The monitoring parts (:class:`Monitor`, :class:`Reference`, drift functions, alert
rules) are plain Python and numpy; the HTTP app needs the ``serve`` extra
(``pip install 'frugalml[serve]'``) and is imported only by :func:`create_app`.

Example:
    >>> from frugalml.serve import load_model, Monitor
    >>> served = load_model("models:/demo-diabetes-svm@champion")    # doctest: +SKIP
    >>> monitor = Monitor(served.reference, {"window_rows": 200})    # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from frugalml.serve._alerts import AlertEvaluator, AlertEvent, LogNotifier, Notifier, WebhookNotifier
from frugalml.serve._config import AlertRule, MonitoringConfig, as_alert_rule, as_monitoring_config
from frugalml.serve._drift import FeatureDrift, WindowDrift, feature_psi, ks, psi, window_drift
from frugalml.serve._model import ModelLoadError, ServedModel, load_model, save_model
from frugalml.serve._monitor import Monitor, MonitorState
from frugalml.serve._quality import DuplicateFeedback, FeedbackError
from frugalml.serve._reference import FeatureReference, Reference
from frugalml.serve._settings import ServerSettings, parse_rate


def create_app(served: ServedModel, settings: ServerSettings | None = None, config: Any = None, *,
               loader: Any = None) -> Any:
    """The FastAPI app serving ``served``; ``config`` defaults to the model's monitoring config."""
    from frugalml.serve._app import create_app as _create_app

    return _create_app(served, settings, config, loader=loader)


__all__ = [
    "AlertEvaluator",
    "AlertEvent",
    "AlertRule",
    "DuplicateFeedback",
    "FeatureDrift",
    "FeatureReference",
    "FeedbackError",
    "LogNotifier",
    "ModelLoadError",
    "Monitor",
    "MonitorState",
    "MonitoringConfig",
    "Notifier",
    "Reference",
    "ServedModel",
    "ServerSettings",
    "WebhookNotifier",
    "WindowDrift",
    "as_alert_rule",
    "as_monitoring_config",
    "create_app",
    "feature_psi",
    "ks",
    "load_model",
    "parse_rate",
    "psi",
    "save_model",
    "window_drift",
]
