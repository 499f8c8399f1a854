"""Compute accounting per mechanism, and the budgeted mode's report."""

from __future__ import annotations

import pytest

from frugalml import Search, StopInfo, StudyResult, TrialRecord, TrialStatus, Window, compute_account


def record(n: int, status: TrialStatus, stop: StopInfo | None, cpu_s: float, saved: float) -> TrialRecord:
    return TrialRecord(trial_id=f"w/c{n}/r0", number=n, workload="w", config_id=f"c{n}", repeat=0,
                       params={"batch_size": n}, status=status, steps_done=10, cpu_s=cpu_s, cpu_s_saved=saved,
                       stop=stop, windows=(Window(10, {"val_loss": 1.0 / (n + 1)}),))


def stop(rule: str, kind: str = "system") -> StopInfo:
    return StopInfo(rule, kind, 1, 2.0, 1.0, rule)


RECORDS = (
    record(0, TrialStatus.COMPLETED, None, 10.0, 0.0),
    record(1, TrialStatus.STOPPED, stop("max_memory_mb"), 1.0, 9.0),
    record(2, TrialStatus.STOPPED, stop("predicted_max_trial_seconds"), 2.0, 20.0),
    record(3, TrialStatus.SKIPPED, stop("skipped_max_memory_mb"), 0.0, 30.0),
    record(4, TrialStatus.STOPPED, stop("patience", "ml"), 3.0, 4.0),
)


def test_savings_are_split_by_mechanism_and_add_up_to_running_everything_in_full():
    account = compute_account(RECORDS)
    assert account.saved_by_mechanism == {
        "hard budget stop": 9.0, "predicted stop": 20.0, "skip": 30.0, "learning rule": 4.0,
    }
    assert (account.used_cpu_s, account.full_cpu_s, account.skipped, account.stopped) == (16.0, 79.0, 1, 3)
    assert account.saved_fraction == pytest.approx(63 / 79)


def test_budgeted_mode_reports_the_best_feasible_found_within_the_compute_budget():
    cut = record(5, TrialStatus.STOPPED, stop("max_study_cpu_seconds", "study"), 1.0, 5.0)
    result = StudyResult("s", "d", (*RECORDS, cut), Search(), compute_budget_cpu_s=20.0)
    assert result.budget_exhausted
    assert result.best_feasible().config_id == "c4"  # c5 was cut short by the compute budget
    assert not StudyResult("s", "d", RECORDS, Search(), compute_budget_cpu_s=100.0).budget_exhausted


def test_the_public_api_is_what_all_lists():
    import frugalml.prediction as prediction

    assert sorted(prediction.__all__) == prediction.__all__
    assert {n for n in dir(prediction) if not n.startswith("_") and n != "annotations"} == set(prediction.__all__)


def test_tune_reports_the_best_found_within_the_compute_budget(tmp_path):
    from helpers import cli, write_study

    study = write_study(tmp_path / "s.toml", """
[study]
name = "budgeted"
workers = 1
directory = "out"
[[workloads]]
train = "trainers:steady"
train_kwargs = { steps = 1000, step_s = 0.002 }
eval_every = 100
name = "steady"
[search]
space = { offset = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5] }
[budget]
max_study_cpu_seconds = 3.0
[tracking]
mlflow_uri = "none"
""")
    out = cli("tune", str(study), "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "budgeted mode: used" in out.stdout and "the compute budget ended the search" in out.stdout
    assert "best configuration within budget: {'offset': 0.0}" in out.stdout
    # Each trial needs ~2 CPU-s, so the second one is always cut mid-run by the 3 CPU-s budget.
    assert "saved by mechanism: study budget" in out.stdout
