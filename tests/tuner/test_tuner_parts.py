"""The tuner's parts, each alone: study budgets, a workload's open configurations, the
recorder and the usage check, fed records and stand-ins; no trial runs, no process starts."""

from __future__ import annotations

from collections import deque

import pytest

from frugalml import Workload
from frugalml.exceptions import TrialUsageError
from frugalml.executors import StudyState
from frugalml.records import StopInfo, TrialRecord, TrialStatus
from frugalml.search import Config
from frugalml.stopping import STUDY, budget_rule
from frugalml.tuner._budgets import StudyBudgets
from frugalml.tuner._plans import WorkloadPlan
from frugalml.tuner._recorder import Recorder
from frugalml.tuner._schedule import check_usage


def record(config_id: str = "c0", repeat: int = 0, status: TrialStatus = TrialStatus.COMPLETED, cpu_s: float = 1.0,
           **fields) -> TrialRecord:
    fields = {"steps_done": 5, **fields}
    return TrialRecord(trial_id=f"w/{config_id}/r{repeat}", number=repeat, workload="w", config_id=config_id,
                       repeat=repeat, params={"lr": 0.1}, status=status, cpu_s=cpu_s, **fields)


class Running:
    """An executor's running trials, as the tuner's budget check reads them."""

    def __init__(self, **used: float) -> None:
        self.used = used
        self.shut_down = False

    def running_used(self, metric: str) -> float:
        return self.used.get(metric, 0.0)

    def shutdown(self) -> None:
        self.shut_down = True


class Sampler:
    def __init__(self) -> None:
        self.restored: tuple | None = None
        self.told: list[tuple[Config, list[TrialRecord]]] = []

    def restore(self, finished, incomplete) -> None:
        self.restored = (finished, incomplete)

    def tell(self, config, records) -> None:
        self.told.append((config, list(records)))


def plan() -> WorkloadPlan:
    return WorkloadPlan(Workload(train="trainers:steady", name="w"), Sampler(), None, {}, None, deque(), {})


# -- study budgets -------------------------------------------------------------------------


def test_a_study_budget_counts_the_running_trials_with_the_finished_ones():
    budgets = StudyBudgets([budget_rule("max_study_cpu_seconds", 10.0), budget_rule("max_memory_mb", 100.0)])
    state = StudyState([record(cpu_s=6.0)])
    assert budgets.left(state, Running(cpu_s=3.9))
    assert not budgets.left(state, Running(cpu_s=4.0))  # 6 + 4 reaches the limit: no new trial starts
    assert budgets.compute_limit == 10.0


def test_every_study_budget_must_have_some_left():
    budgets = StudyBudgets([budget_rule("max_study_cpu_seconds", 10.0), budget_rule("max_study_joules", 50.0)])
    state = StudyState([record(cpu_s=1.0, info={"energy_j": 45.0})])
    assert budgets.left(state, Running(energy_j=4.0))
    assert not budgets.left(state, Running(energy_j=5.0))


def test_without_study_budgets_trials_always_start():
    budgets = StudyBudgets([budget_rule("max_memory_mb", 100.0)])
    assert budgets.left(StudyState([record(cpu_s=1e9)]), Running(cpu_s=1e9))
    assert budgets.compute_limit is None


# -- a workload's configurations -------------------------------------------------------------


def test_restore_queues_only_the_missing_repeats_of_an_incomplete_configuration():
    workload = plan()
    stored = [record("done", 0), record("done", 1), record("half", 1), record("skip", 0, TrialStatus.SKIPPED),
              TrialRecord(trial_id="other/x/r0", number=9, workload="other", config_id="x", repeat=0, params={},
                          status=TrialStatus.COMPLETED)]
    workload.restore(stored, repeats=2)
    finished, incomplete = workload.sampler.restored
    assert sorted(c.config_id for c, _ in finished) == ["done", "skip"]  # a skipped configuration counts as done
    assert [c.config_id for c in incomplete] == ["half"]
    assert [(c.config_id, repeat) for c, repeat in workload.pending] == [("half", 0)]
    assert [r.repeat for r in workload.open_configs["half"][1]] == [1]


def test_a_configuration_is_told_once_all_its_repeats_ended():
    workload, config = plan(), Config("c0", {"lr": 0.1})
    workload.open_configs["c0"] = (config, [])
    workload.finish(config, record(repeat=0), repeats=2)
    assert not workload.sampler.told
    workload.finish(config, record(repeat=1), repeats=2)
    assert [(c.config_id, len(group)) for c, group in workload.sampler.told] == [("c0", 2)]
    assert "c0" not in workload.open_configs


def test_a_study_budget_stop_ends_the_configuration_at_once():
    workload, config = plan(), Config("c0", {"lr": 0.1})
    workload.open_configs["c0"] = (config, [])
    stop = StopInfo(rule="max_study_cpu_seconds", kind=STUDY, step=3, value=11.0, threshold=10.0, message="over")
    workload.finish(config, record(status=TrialStatus.STOPPED, stop=stop), repeats=3)
    assert [len(group) for _, group in workload.sampler.told] == [1]


# -- the recorder --------------------------------------------------------------------------


class Store:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def open_study(self, name, config) -> None:
        self.calls.append("open")

    def save_trial(self, record) -> None:
        self.calls.append(f"save {record.trial_id}")


class Tracking:
    def __init__(self) -> None:
        self.queued: list[str] = []

    def put(self, record) -> None:
        self.queued.append(record.trial_id)


class StudyStub:
    name = "s"

    def __init__(self, path) -> None:
        self.path = path

    def to_dict(self) -> dict:
        return {}


def test_the_first_record_locks_the_run_and_opens_the_store_with_its_lineage(tmp_path):
    store, tracking, events, records, state = Store(), Tracking(), [], [], StudyState()
    recorder = Recorder(StudyStub(tmp_path), store, records, state, tracking, lambda *event: events.append(event),
                        lambda: store.calls.append("lock"), store_open=False, lineage={"w": {"dataset": "iris"}})
    first, second = record("a"), record("b")
    recorder.record(first)
    recorder.record(second)
    assert store.calls == ["lock", "open", "save w/a/r0", "save w/b/r0"]
    assert (tmp_path / "lineage.json").is_file()
    assert records == [first, second] and state.finished_cpu_s == 2.0
    assert tracking.queued == ["w/a/r0", "w/b/r0"]
    assert events == [("end", first), ("end", second)]


def test_a_resumed_store_is_neither_reopened_nor_given_lineage(tmp_path):
    store = Store()
    recorder = Recorder(StudyStub(tmp_path), store, [], StudyState(), Tracking(), lambda *event: None,
                        lambda: store.calls.append("lock"), store_open=True, lineage=None)
    recorder.record(record())
    assert store.calls == ["save w/c0/r0"]
    assert not (tmp_path / "lineage.json").exists()


# -- mistakes every trial would repeat ----------------------------------------------------------


@pytest.mark.parametrize(("ended", "error"), [
    (record(status=TrialStatus.FAILED, error="ValueError: bad", info={"user_error": True}), TrialUsageError),
    (record(steps_done=0), TrialUsageError),
])
def test_a_mistake_every_trial_would_repeat_shuts_the_executor_down(ended, error):
    executor = Running()
    with pytest.raises(error):
        check_usage(ended, executor)
    assert executor.shut_down


def test_an_ordinary_failure_goes_on():
    executor = Running()
    check_usage(record(status=TrialStatus.FAILED, error="MemoryError"), executor)
    assert not executor.shut_down
