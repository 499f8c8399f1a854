"""Where each ended trial goes: the results store first, then the study's state, MLflow and the caller."""

from __future__ import annotations

from typing import Any, Callable

from frugalml.executors import StudyState
from frugalml.lineage import write_lineage
from frugalml.records import TrialRecord
from frugalml.store import ResultStore
from frugalml.study import Study
from frugalml.tuner._tracking import BackgroundTracking


class Recorder:
    """Records ended trials: one store transaction each, then the study's records and state,
    the tracking queue and the ``progress("end", record)`` callback.

    A new study's store is opened with its first trial (the run lock taken first, by
    ``lock_run``), and the data ``lineage`` written beside it.
    """

    def __init__(self, study: Study, store: ResultStore, records: list[TrialRecord], state: StudyState,
                 tracking: BackgroundTracking, progress: Callable[[str, Any], None], lock_run: Callable[[], None],
                 *, store_open: bool, lineage: dict[str, Any] | None = None) -> None:
        self.study, self.store, self.records, self.state = study, store, records, state
        self.tracking, self.progress, self.lock_run = tracking, progress, lock_run
        self.store_open = store_open
        self.lineage = lineage

    def record(self, record: TrialRecord) -> None:
        if not self.store_open:
            self.lock_run()
            self.store.open_study(self.study.name, self.study.to_dict())
            self.store_open = True
            if self.lineage is not None:
                write_lineage(self.study.path, self.lineage)
        self.store.save_trial(record)
        self.records.append(record)
        self.state.add(record)
        self.tracking.put(record)
        self.progress("end", record)
