"""MLflow tracking of a study, in its own process fed by a thread: the results store comes first, MLflow a copy."""

from __future__ import annotations

import logging
import queue
import threading

from frugalml.exceptions import one_line
from frugalml.records import TrialRecord
from frugalml.results import StudyResult
from frugalml.store import ResultStore
from frugalml.study import DEFAULT_MLFLOW, Study
from frugalml.tracking import TrackerProcess, TrackingError, default_uri, shown_uri

logger = logging.getLogger("frugalml.tracking")  # with no logging set up, Python prints the line to stderr


class BackgroundTracking:
    """Logs a study's finished trials to MLflow through a :class:`~frugalml.tracking.TrackerProcess`,
    from a thread: a slow tracking server must not pause the watchdog, and MLflow's imports
    must not take the driver's GIL.

    After the first failure nothing more is sent this run (each try would wait out the
    server's time limits again); the store has every trial and ``--resume`` logs the ones
    MLflow lacks. The tracker is opened first, while the first trials run, so an unreachable
    server is reported within seconds of the start.
    """

    def __init__(self, study: Study, store: ResultStore) -> None:
        self.study = study
        self.store = store
        self.tracker: TrackerProcess | None = None
        self.error: Exception | None = None
        self._queue: queue.Queue[TrialRecord | None] = queue.Queue()
        self._thread = threading.Thread(target=self._track, name="frugalml-tracking", daemon=True)

    def put(self, record: TrialRecord) -> None:
        """Queue ``record`` for MLflow, if the study tracks there."""
        if self.study.mlflow_uri:
            self._queue.put(record)

    def put_unlogged(self, records: list[TrialRecord]) -> None:
        """Queue stored trials that never reached MLflow (the driver died in between, or the
        tracking server was down)."""
        if not records or not self.study.mlflow_uri:
            return
        unlogged = {t for t, run in self.store.mlflow_runs().items() if run is None}
        for record in records:
            if record.trial_id in unlogged:
                self._queue.put(record)

    def start(self) -> None:
        """Start MLflow's process (it imports while the study sets up) and the thread that feeds it."""
        if self.study.mlflow_uri:
            study = self.study
            params = {"method": study.search.method, "repeats": study.repeats, "workers": study.workers,
                      "seed": study.seed, "backend": study.backend, "objectives": ",".join(study.search.objectives),
                      **{f"budget/{k}": v for k, v in study.budget.items()},
                      **{f"stopping/{k}": v for k, v in study.stopping.items()},
                      "workloads": ",".join(w.name for w in study.workloads)}
            try:
                self.tracker = TrackerProcess(self._uri(), study.name, artifact_dir=study.path / "mlartifacts",
                                              params=params)
            except Exception as error:  # noqa: BLE001 - no process to be had: the study goes on, as for any failure
                self._failed(error)
        self._thread.start()

    def stop(self, ended_by: type[BaseException] | None) -> None:
        """Wait for the queued trials to be sent; with the run ``ended_by`` an exception, leave
        them to ``--resume`` instead, and end the study's MLflow run KILLED or FAILED."""
        if ended_by is not None:
            while not self._queue.empty():
                self._queue.get_nowait()
        self._queue.put(None)
        self._thread.join()
        if self.tracker is not None and ended_by is not None:  # never leave the study's run RUNNING
            self.tracker.close("KILLED" if issubclass(ended_by, KeyboardInterrupt) else "FAILED")

    def end(self, result: StudyResult) -> None:
        """Log the study's summary and end its run: FINISHED, or FAILED where trials are missing."""
        if self.tracker is None:
            return
        if self.error is None:
            try:
                self.tracker.log_study(result)
                self.tracker.close()
                return
            except Exception as error:  # noqa: BLE001 - the store has everything; MLflow is a copy
                self._failed(error)
        self.tracker.close("FAILED")

    def _uri(self) -> str:
        return default_uri(self.study.path) if self.study.mlflow_uri == DEFAULT_MLFLOW else self.study.mlflow_uri

    def _track(self) -> None:
        if self.tracker is not None:
            try:
                self.tracker.open()
            except Exception as error:  # noqa: BLE001 - as below
                self._failed(error)
        while (record := self._queue.get()) is not None:
            if self.error is not None:  # also set when no tracker could be had
                continue
            try:
                run_id = self.tracker.log_trial(record)
            except Exception as error:  # noqa: BLE001 - any failure of the copy; the store has the trial
                self._failed(error)
                continue
            try:
                self.store.set_mlflow_run(record.trial_id, run_id)
            except Exception:  # noqa: BLE001 - the driver meets the store's problem itself; resume re-logs
                pass

    def _failed(self, error: BaseException) -> None:
        """Turn tracking off for the rest of this run and say so, once."""
        if self.error is not None:
            return
        self.error = error
        why = one_line(error)
        if not isinstance(error, TrackingError):
            why = f"MLflow tracking at {shown_uri(self._uri())} failed: {why}"
        logger.warning("frugalml: warning: %s; the study goes on without MLflow (its results store has every trial), "
                       "and `frugalml tune --resume` logs the trials MLflow lacks.", why)
