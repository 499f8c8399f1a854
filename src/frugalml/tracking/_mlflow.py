"""MLflow as a tracking backend: one parent run per study, one child run per trial.

Per-step and per-window metrics are sent with ``log_batch`` (a synchronous
``log_metric`` costs ~3 ms on a sqlite store), after the trial ends, from the
driver, so tracking never slows a trial.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from frugalml.exceptions import ConfigError
from frugalml.records import TrialRecord, TrialStatus
from frugalml.tracking._base import Tracker

TRIAL_TAG = "frugalml.trial_id"
STUDY_TAG = "frugalml.study"
_BATCH = 1000  # MLflow's limit of metrics per log_batch call
_RUN_STATUS = {
    TrialStatus.COMPLETED: "FINISHED",
    TrialStatus.STOPPED: "KILLED",
    TrialStatus.FAILED: "FAILED",
    TrialStatus.SKIPPED: "KILLED",
}


def default_uri(study_dir: str | Path) -> str:
    return "sqlite:///" + str((Path(study_dir) / "mlflow.db").resolve())


def check_uri(uri: str) -> None:
    """A one-line ConfigError for a tracking URI whose scheme no MLflow store (or plugin) serves.

    Only the scheme is checked: a tracking server that is down must not stop a study
    (its trials are re-logged on resume).
    """
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry
    except ImportError:  # a private registry: if MLflow moves it, the first log reports the error
        return
    try:
        _tracking_store_registry.get_store_builder(uri)
    except MlflowException:
        raise ConfigError(
            f"MLflow cannot store runs at {uri!r} (unknown scheme); use sqlite:///PATH.db, http(s)://HOST, "
            "a database URI, or \"none\" in [tracking] mlflow_uri."
        ) from None


class MlflowTracker(Tracker):
    """Logs trials to the MLflow tracking server or store at ``uri``.

    The experiment is named after the study; ``mlflow ui --backend-store-uri URI``
    shows one parent run per study with a child run per trial.
    """

    def __init__(self, uri: str, study_name: str) -> None:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no INFO lines about creating tables
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(study_name)
        self.experiment_id = (
            experiment.experiment_id if experiment is not None else self.client.create_experiment(study_name)
        )
        parents = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{STUDY_TAG}` = '{study_name}'", max_results=1
        )
        if parents:
            self.parent_run_id = parents[0].info.run_id
        else:
            run = self.client.create_run(self.experiment_id, run_name=study_name, tags={STUDY_TAG: study_name})
            self.parent_run_id = run.info.run_id

    def runs_by_trial(self) -> dict[str, str]:
        """trial_id → run id of the trial runs already logged."""
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'",
            max_results=50000,
        )
        return {r.data.tags[TRIAL_TAG]: r.info.run_id for r in runs if TRIAL_TAG in r.data.tags}

    def log_trial(self, record: TrialRecord) -> str:
        from mlflow.entities import Metric, Param

        for run_id in self._existing(record.trial_id):
            self.client.delete_run(run_id)  # resume after a crash between store and MLflow
        tags = {
            "mlflow.parentRunId": self.parent_run_id,
            TRIAL_TAG: record.trial_id,
            "frugalml.workload": record.workload,
            "frugalml.config_id": record.config_id,
            "frugalml.repeat": str(record.repeat),
            "status": record.status.value,
            "stop_rule": record.stop.rule if record.stop else "",
        }
        if record.stop:
            tags["stop_reason"] = record.stop.message[:5000]
        if record.error:
            tags["error"] = record.error[:5000]
        run = self.client.create_run(
            self.experiment_id, run_name=f"{record.number}:{record.trial_id}", tags=tags
        )
        run_id = run.info.run_id
        params = {**{k: str(v) for k, v in record.params.items()}, "workload": record.workload}
        now = int(time.time() * 1000)
        metrics = [Metric("train_loss_step", loss, now, step) for step, loss in enumerate(record.train_loss, 1)]
        for window in record.windows:
            metrics.extend(Metric(name, value, now, window.step) for name, value in window.values.items())
        summary = {
            "steps_done": record.steps_done,
            "cpu_seconds": record.cpu_s,
            "wall_seconds": record.wall_s,
            "steps_saved": record.steps_saved,
            "cpu_seconds_saved": record.cpu_s_saved,
        }
        if record.stop:
            summary.update(stop_step=record.stop.step, stop_value=record.stop.value)
        metrics.extend(Metric(f"trial/{k}", float(v), now, 0) for k, v in summary.items())
        metrics = [m for m in metrics if not math.isnan(m.value)]
        self.client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in params.items()])
        for start in range(0, len(metrics), _BATCH):
            self.client.log_batch(run_id, metrics=metrics[start : start + _BATCH])
        self.client.set_terminated(run_id, _RUN_STATUS.get(record.status, "FINISHED"))
        return run_id

    def _existing(self, trial_id: str) -> list[str]:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}'", max_results=100
        )
        return [r.info.run_id for r in runs]

    def close(self) -> None:
        self.client.set_terminated(self.parent_run_id, "FINISHED")
