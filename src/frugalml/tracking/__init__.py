"""Tracking backends: MLflow (one parent run per study, a child run per trial)."""

from frugalml.tracking._base import Tracker
from frugalml.tracking._mlflow import MlflowTracker, check_uri, default_uri, seed_sqlite_store

__all__ = ["MlflowTracker", "Tracker", "check_uri", "default_uri", "seed_sqlite_store"]
