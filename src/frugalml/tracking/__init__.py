"""Tracking backends: MLflow (one parent run per study, a child run per trial)."""

from frugalml.tracking._base import Tracker
from frugalml.tracking._mlflow import (
    HTTP_LIMITS, MODEL_ARTIFACT, MlflowTracker, TrackingError, check_uri, default_uri, limit_http_requests, probe,
    seed_sqlite_store, shown_uri,
)
from frugalml.tracking._remote import TrackerProcess, end_tracking_process
from frugalml.tracking._template import sqlite_path

__all__ = [
    "HTTP_LIMITS", "MODEL_ARTIFACT", "MlflowTracker", "Tracker", "TrackerProcess", "TrackingError", "check_uri",
    "default_uri", "end_tracking_process", "limit_http_requests", "probe", "seed_sqlite_store", "shown_uri",
    "sqlite_path",
]
