"""Tracking backends: MLflow (one parent run per study, a child run per trial)."""

from frugalml.tracking._base import Tracker
from frugalml.tracking._mlflow import MlflowTracker, default_uri

__all__ = ["MlflowTracker", "Tracker", "default_uri"]
