"""MLflow as a tracking backend: one parent run per study, one child run per trial.

Per-step and per-window metrics are sent with ``log_batch`` (a synchronous
``log_metric`` costs ~3 ms on a sqlite store), after the trial ends, from the
driver, so tracking never slows a trial.

Names: the model's metrics as the trial reported them (``val_loss``, ``accuracy``,
``train_loss``, per step ``train_loss_step``); system figures under ``system/``
with their unit (``system/memory_mb``, ``system/mean_step_ms``, ...); the trial's
account under ``trial/`` (``trial/cpu_s``, ``trial/wall_s``, ``trial/steps_done``,
``trial/steps_saved``, ``trial/cpu_s_saved``, and ``trial/peak_memory_mb`` /
``trial/mean_step_ms`` / ``trial/energy_j`` / ``trial/energy_j_saved`` when known; how the
joules were got, measured or estimated, in the ``energy_source`` and ``energy_assumption`` tags). Every trial run has the ``trial/`` keys; a
window series the OS or the hardware does not give (``uss_mb`` off Linux, GPU
figures without a GPU) is not logged rather than logged as 0. The parent run holds
the study's settings as params and, when it ends, the best feasible configuration
of each workload and the compute account (``study/...``).
"""

from __future__ import annotations

import math
import os
import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from frugalml.exceptions import ConfigError
from frugalml.files import cache_root
from frugalml.records import SYSTEM_METRICS, TrialRecord, TrialStatus
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


def seed_sqlite_store(uri: str) -> None:
    """Create a new ``sqlite:///`` store by copying an empty, migrated one from the cache.

    MLflow builds a new SQLite store migration by migration (2-5 s here); a copy takes
    ~0.1 s. The template is made once per MLflow version, in the frugalml cache. Its
    ``Default`` experiment is pointed at ``./mlruns/0`` of this directory, as MLflow
    would have done. Other URIs, and files that exist, are left alone.
    """
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri[len("sqlite:///"):])
    if path.exists():
        return
    import mlflow

    template = cache_root() / "mlflow" / f"empty-store-{mlflow.__version__}.db"
    try:
        if not template.is_file():
            template.parent.mkdir(parents=True, exist_ok=True)
            tmp = template.with_name(f".{template.name}.{os.getpid()}.tmp")
            try:
                from mlflow.tracking import MlflowClient

                MlflowClient(tracking_uri="sqlite:///" + str(tmp)).search_experiments(max_results=1)
                os.replace(tmp, template)
            finally:
                tmp.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            shutil.copyfile(template, tmp)
            with closing(sqlite3.connect(tmp)) as connection, connection:
                connection.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                                   (os.path.abspath(os.path.join("mlruns", "0")),))
            os.link(tmp, path)  # never over a store another process created meanwhile
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    except (OSError, sqlite3.Error):
        return  # an unwritable cache or folder: MLflow creates the store itself, slowly


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
    shows one parent run per study with a child run per trial. ``artifact_dir``
    (the study's ``mlartifacts`` folder) is where a new experiment keeps its artifacts.
    """

    def __init__(self, uri: str, study_name: str, artifact_dir: str | Path | None = None,
                 params: dict[str, object] | None = None) -> None:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no INFO lines about creating tables
        from mlflow.tracking import MlflowClient

        self.uri = uri
        seed_sqlite_store(uri)
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(study_name)
        location = Path(artifact_dir).resolve().as_uri() if artifact_dir is not None else None
        self.experiment_id = (
            experiment.experiment_id if experiment is not None
            else self.client.create_experiment(study_name, artifact_location=location)
        )
        parents = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{STUDY_TAG}` = '{study_name}'", max_results=1
        )
        if parents:
            self.parent_run_id = parents[0].info.run_id
        else:
            run = self.client.create_run(self.experiment_id, run_name=study_name, tags={STUDY_TAG: study_name})
            self.parent_run_id = run.info.run_id
            if params:
                from mlflow.entities import Param

                self.client.log_batch(self.parent_run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])

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
        if record.stop:  # tags, not metrics: every trial run has the same metric keys
            tags.update(stop_reason=record.stop.message[:5000], stop_step=str(record.stop.step),
                        stop_value=f"{record.stop.value:g}", stop_threshold=f"{record.stop.threshold:g}")
        if record.error:
            tags["error"] = record.error[:5000]
        for name in ("energy_source", "energy_assumption"):
            if record.info.get(name):
                tags[name] = str(record.info[name])[:5000]
        run = self.client.create_run(
            self.experiment_id, run_name=f"{record.number}:{record.trial_id}", tags=tags
        )
        run_id = run.info.run_id
        params = {**{k: str(v) for k, v in record.params.items()}, "workload": record.workload}
        now = int(time.time() * 1000)
        metrics = [Metric("train_loss_step", loss, now, step) for step, loss in enumerate(record.train_loss, 1)]
        for window in record.windows:
            metrics.extend(Metric(metric_name(name), value, now, window.step) for name, value in window.values.items())
        summary = {
            "steps_done": record.steps_done,
            "cpu_s": record.cpu_s,
            "wall_s": record.wall_s,
            "steps_saved": record.steps_saved,
            "cpu_s_saved": record.cpu_s_saved,
        }
        for name, value in (("peak_memory_mb", record.peak("memory_mb")), ("mean_step_ms", record.mean("mean_step_ms")),
                            ("energy_j", record.energy_j), ("energy_j_saved", record.energy_j_saved)):
            if value is not None:
                summary[name] = value
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

    def log_study(self, result: object) -> None:
        """The best feasible configuration of each workload and the compute account, on the parent run."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        account = result.compute()
        metrics = {"study/trials": account.trials, "study/cpu_s_used": account.used_cpu_s,
                   "study/cpu_s_saved": account.saved_cpu_s, "study/stopped": account.stopped,
                   "study/skipped": account.skipped, "study/failed": account.failed}
        tags = {}
        if account.used_energy_j is not None:
            metrics.update({"study/energy_j_used": account.used_energy_j, "study/energy_j_saved": account.saved_energy_j})
            tags["energy_source"] = ",".join(account.energy_sources)
        for workload in sorted({r.workload for r in result.records}):
            best = result.best_feasible(workload)
            if best is None:
                continue
            tags[f"best/{workload}"] = best.config_id[:5000]
            metrics.update({f"best/{workload}/{k}": v for k, v in best.mean.items()
                            if v is not None and math.isfinite(v)})
        batch = [Metric(k, float(v), now, 0) for k, v in metrics.items() if math.isfinite(float(v))]
        self.client.log_batch(self.parent_run_id, metrics=batch)
        for key, value in tags.items():
            self.client.set_tag(self.parent_run_id, key, value)

    def close(self) -> None:
        self.client.set_terminated(self.parent_run_id, "FINISHED")


def metric_name(name: str) -> str:
    """The MLflow name of a window metric: system figures under ``system/``."""
    return f"system/{name}" if name in SYSTEM_METRICS else name
