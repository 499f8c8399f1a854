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

A trial that kept a model (``trial.log_model``) has it as its run's ``model``
artifact, an MLflow model in the model's flavour:
``mlflow.pyfunc.load_model("runs:/<trial run id>/model")``. The trial only pickled it;
it is exported here, in the driver, so MLflow's import and the flavour's save are not
charged to the trial's memory or CPU.

Nothing a user types goes into a search filter unquoted: a trial id holds its
configuration (``optimizer='adam'``), so trial runs are found by their parent's run
id, once per study, and matched on the ``frugalml.trial_id`` tag in Python.

A tracking server gets time limits (:data:`HTTP_LIMITS`, unless the environment sets
them) and a probe before the first call, so an unreachable one fails in seconds, not
after MLflow's minutes of retries. Runs are never left RUNNING by a study that ends:
a trial run that could not be completed is ended FAILED, the study's run ends
FINISHED, FAILED or KILLED (Ctrl-C), and runs a killed driver left RUNNING are ended
KILLED when the study is opened again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import Any

from frugalml import accounting
from frugalml.exceptions import ConfigError
from frugalml.metrics import MEAN_STEP_MS, MEMORY_MB, SYSTEM_METRICS
from frugalml.records import TrialRecord, TrialStatus
from frugalml.tracking._base import Tracker
from frugalml.tracking._template import seed_sqlite_store, sqlite_path

TRIAL_TAG = "frugalml.trial_id"
STUDY_TAG = "frugalml.study"
MODEL_ARTIFACT = "model"  # a trial run's model: runs:/<run id>/model
_BATCH = 1000  # MLflow's limit of metrics per log_batch call
_RUN_STATUS = {
    TrialStatus.COMPLETED: "FINISHED",
    TrialStatus.STOPPED: "KILLED",
    TrialStatus.FAILED: "FAILED",
    TrialStatus.SKIPPED: "KILLED",
}
#: MLflow's own limits for a tracking server, where the environment does not set them:
#: MLflow waits 120 s per request and retries 7 times with backoff (minutes) by default.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",  # seconds per request (connect and read)
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # 1 s, then 2 s between tries
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
}
PROBE_TIMEOUT_S = 3.0  # a /health that takes longer counts as down: resume logs later


class TrackingError(Exception):
    """MLflow could not be reached or refused a write; the message is one line."""


def shown_uri(uri: str) -> str:
    """``uri`` without a password or token in it, for messages."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None and not parts.query:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" if parts.username else host
    netloc += f":{parts.port}" if parts.port else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _is_http(uri: str) -> bool:
    return uri.lower().startswith(("http://", "https://"))


def probe(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the tracking server at an ``http(s)://`` ``uri`` is unreachable, or None when it answers.

    One GET of ``/health`` (an MLflow server's liveness route) with ``timeout_s`` for
    the connection and the answer, no retries, through the environment's proxies. Any
    HTTP answer counts, even 401 or 404: a server is there. The certificate is not
    checked here (nothing is sent); MLflow's own calls check it.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
    parts = urllib.parse.urlsplit(uri)
    url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/health", "", ""))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            response.read(64)
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as error:
        reason = error.reason
        return getattr(reason, "strerror", None) or str(reason)
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except (OSError, ValueError) as error:  # a reset connection, a malformed answer or address
        return str(error) or type(error).__name__
    return None


def limit_http_requests() -> None:
    """Apply :data:`HTTP_LIMITS` to MLflow's HTTP calls (a value the environment sets is kept)."""
    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)


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
    if (path := sqlite_path(uri)) is not None:
        _check_sqlite_path(path)


def _check_sqlite_path(path: Path) -> None:
    """A one-line ConfigError unless an MLflow SQLite store can be opened or created at ``path``.

    Nothing is created here: the nearest existing folder above ``path`` must be a
    writable folder, and ``path`` itself, if it exists, an SQLite file.
    """
    fix = "choose another path in [tracking] mlflow_uri, or \"default\" for the study's folder"
    if path.exists():
        if not path.is_file():
            raise ConfigError(f"The MLflow store {str(path)!r} is not a file; {fix}.")
        with path.open("rb") as file:
            header = file.read(16)
        if header and header != b"SQLite format 3\x00":
            raise ConfigError(f"The MLflow store {str(path)!r} is not an SQLite database; {fix}.")
        if not os.access(path, os.R_OK | os.W_OK):
            raise ConfigError(f"The MLflow store {str(path)!r} cannot be written (permissions); {fix}.")
        return
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"The MLflow store {str(path)!r} cannot be created: {str(folder)!r} is not a folder; {fix}.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"The MLflow store {str(path)!r} cannot be created: {str(folder)!r} is not writable; {fix}.")


class MlflowTracker(Tracker):
    """Logs trials to the MLflow tracking server or store at ``uri``.

    The experiment is named after the study; ``mlflow ui --backend-store-uri URI``
    shows one parent run per study with a child run per trial. ``artifact_dir``
    (the study's ``mlartifacts`` folder) is where a new experiment keeps its artifacts.
    """

    def __init__(self, uri: str, study_name: str, artifact_dir: str | Path | None = None,
                 params: dict[str, object] | None = None) -> None:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no INFO lines about creating tables
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a server's "View run" lines
        self.uri = uri
        if _is_http(uri):
            limit_http_requests()
            if (why := probe(uri)) is not None:
                raise TrackingError(f"the MLflow tracking server {shown_uri(uri)} is unreachable ({why})")
        from mlflow.tracking import MlflowClient

        seed_sqlite_store(uri)
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(study_name)
        location = Path(artifact_dir).resolve().as_uri() if artifact_dir is not None else None
        self.experiment_id = (
            experiment.experiment_id if experiment is not None
            else self.client.create_experiment(study_name, artifact_location=location)
        )
        parent = self._study_run(study_name)
        if parent is not None:
            self.parent_run_id = parent.info.run_id
            if parent.info.status != "RUNNING":  # a resumed study runs again
                self.client.update_run(self.parent_run_id, status="RUNNING")
        else:
            run = self.client.create_run(self.experiment_id, run_name=study_name, tags={STUDY_TAG: study_name})
            self.parent_run_id = run.info.run_id
            if params:
                from mlflow.entities import Param

                self.client.log_batch(self.parent_run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        self._trial_runs: dict[str, list[str]] | None = None  # trial_id -> its runs, read once

    def _study_run(self, study_name: str) -> Any:
        """The study's parent run in the experiment, or None."""
        quoted = _quoted(study_name)
        if quoted is not None:
            runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{STUDY_TAG}` = {quoted}",
                                           max_results=1)
            return runs[0] if runs else None
        return next((run for run in self._search() if run.data.tags.get(STUDY_TAG) == study_name), None)

    def _search(self, filter_string: str = "") -> list[Any]:
        """Every run of the experiment that matches ``filter_string``, page by page."""
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=5000,
                                           page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _children(self) -> dict[str, list[str]]:
        """trial_id → run ids of this study's trial runs, read once (the parent's id is safe in a
        filter; a trial id is not); runs a killed driver left RUNNING are ended KILLED here."""
        if self._trial_runs is None:
            self._trial_runs = {}
            for run in self._search(f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'"):
                if run.info.status == "RUNNING":
                    self.client.set_terminated(run.info.run_id, "KILLED")
                if TRIAL_TAG in run.data.tags:
                    self._trial_runs.setdefault(run.data.tags[TRIAL_TAG], []).append(run.info.run_id)
        return self._trial_runs

    def runs_by_trial(self) -> dict[str, str]:
        """trial_id → run id of the trial runs already logged."""
        return {trial_id: runs[-1] for trial_id, runs in self._children().items() if runs}

    def log_trial(self, record: TrialRecord) -> str:
        children = self._children()
        for run_id in children.pop(record.trial_id, ()):
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
        for name in ("energy_source", "energy_assumption", "saved_basis", "stop_phase"):
            if record.info.get(name):
                tags[name] = str(record.info[name])[:5000]
        run = self.client.create_run(
            self.experiment_id, run_name=f"{record.number}:{record.trial_id}", tags=tags
        )
        run_id = run.info.run_id
        children[record.trial_id] = [run_id]
        try:
            self._fill(run_id, record)
        except BaseException:
            self._end(run_id, "FAILED")
            raise
        return run_id

    def _fill(self, run_id: str, record: TrialRecord) -> None:
        from mlflow.entities import Metric, Param

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
        }
        if (saved := accounting.saved_cpu_s(record)) is not None:  # unknown (tag saved_basis): no number
            summary["cpu_s_saved"] = saved
        for name, value in (("peak_memory_mb", record.peak(MEMORY_MB)), ("mean_step_ms", record.mean(MEAN_STEP_MS)),
                            ("energy_j", record.energy_j), ("energy_j_saved", record.energy_j_saved)):
            if value is not None:
                summary[name] = value
        metrics.extend(Metric(f"trial/{k}", float(v), now, 0) for k, v in summary.items())
        metrics = [m for m in metrics if not math.isnan(m.value)]
        self.client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in params.items()])
        for start in range(0, len(metrics), _BATCH):
            self.client.log_batch(run_id, metrics=metrics[start : start + _BATCH])
        self._log_model(run_id, record)
        self.client.set_terminated(run_id, _RUN_STATUS.get(record.status, "FINISHED"))

    def _log_model(self, run_id: str, record: TrialRecord) -> None:
        """Export the model the trial kept as an MLflow model and log it as the run's ``model``.

        A model that cannot be exported here (its class not importable in the driver, a
        folder on another machine of a Ray cluster) is left out of the run, the reason in
        its ``model_error`` tag; the trial's own copy stays in the study's ``artifacts``.
        A store that refuses the upload raises, as any other write would.
        """
        kept = (record.info.get("model") or {}).get("path")
        if not kept:
            return
        from frugalml.flavors import export_mlflow  # lazy: the model's framework (torch: seconds)

        with tempfile.TemporaryDirectory(prefix="frugalml-model-") as tmp:
            try:
                if not Path(kept).is_dir():
                    raise FileNotFoundError(f"{kept} is not on this machine")
                with _quiet_mlflow():
                    exported = export_mlflow(kept, Path(tmp) / MODEL_ARTIFACT)
            except Exception as error:  # noqa: BLE001 - unpickling runs the model's own code; one line
                lines = str(error).strip().splitlines()
                self.client.set_tag(run_id, "model_error",
                                    f"{type(error).__name__}: {lines[0] if lines else ''}"[:5000])
                return
            self.client.log_artifacts(run_id, str(exported), MODEL_ARTIFACT)

    def _end(self, run_id: str, status: str) -> None:
        """End a run, if MLflow still takes writes (a full disk, or a server gone since,
        may refuse this too: the next open of the study ends it)."""
        if _is_http(self.uri) and probe(self.uri) is not None:
            return  # not another round of MLflow's retries against a server that is down
        try:
            self.client.set_terminated(run_id, status)
        except Exception:  # noqa: BLE001 - the error that got us here is the one to report
            pass

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

    def close(self, status: str = "FINISHED") -> None:
        """End the study's run: ``FINISHED``, or ``FAILED`` / ``KILLED`` when the study did not end well."""
        if status == "FINISHED":
            self.client.set_terminated(self.parent_run_id, status)
        else:
            self._end(self.parent_run_id, status)


@contextlib.contextmanager
def _quiet_mlflow() -> Any:
    """Without MLflow's notes on saving a model (cloudpickle's caution, integer-column hints):
    printed for every trial they would drown the study's progress; ``frugalml register``
    still shows them. The tracking thread is the driver's only MLflow user while a study
    runs, so its logger hides nothing else; Python's warning filters are shared by all
    threads, so a warning of another thread in these few seconds is not shown."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _quoted(value: str) -> str | None:
    """``value`` as a string literal of an MLflow search filter, or None where none can hold it
    (MLflow's filters have no escapes: a value with both kinds of quote cannot be written)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def metric_name(name: str) -> str:
    """The MLflow name of a window metric: system figures under ``system/``."""
    return f"system/{name}" if name in SYSTEM_METRICS else name
