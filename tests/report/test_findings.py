"""Each thesis verdict is a pure function of the data: feed data where a finding fails
and the verdict flips."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from frugalml.reproduce import (
    THESIS_NUMBERS, Verdict, finding_batch_memory, finding_batch_step_time, finding_cpu_uninformative,
    finding_learning_rate_no_effect, finding_level_within_run, finding_memory_budget_in_range,
    finding_memory_budget_thesis, finding_memory_rises_then_levels, simulate_memory_budget, thesis_findings,
)


def make_windows(*, drift: float = 0.0, memory_rise: float = 50.0, batch_on: tuple[str, ...] = ("pandas",),
                 memory_on: tuple[str, ...] | None = None, batch_on_small: bool = False, lr_effect: bool = False,
                 cpu_follows_batch: bool = False, late_memory: bool = False, straddle: bool = False) -> pd.DataFrame:
    """Synthetic windows in which, by default, every thesis finding holds.

    ``batch_on``: the data paths where batch 30000 raises step time (x11) on the large
    dataset, and memory (+250 MB) unless ``memory_on`` names other paths. ``late_memory``:
    that memory shows only in the last window. ``straddle``: at learning rate 0.1 the
    memory effect is +170 MB in the first repeat and none in the second. Batch 30 with
    learning rate 0.001 has the lowest val_loss in every workload.
    """
    rng = np.random.default_rng(0)
    memory_on = batch_on if memory_on is None else memory_on
    rows = []
    for path in ("numpy", "pandas"):
        for large in (True, False):
            workload = f"{'big' if large else 'small'}-{path}"
            effect = path in batch_on and (large or batch_on_small)
            memory_effect = path in memory_on and (large or batch_on_small)
            for batch in (30, 30000):
                for lr in (0.1, 0.001):
                    for repeat in range(2):
                        trial = f"{workload}/b{batch},lr{lr}/r{repeat}"
                        big = batch == 30000
                        step = 10 * (11 if effect and big else 1.5 if big else 1.0) * (2 if lr_effect and lr == 0.1 else 1)
                        extra = 250 if memory_effect and big else 0
                        if straddle and extra and lr == 0.1:
                            extra = 170 if repeat == 0 else 0
                        memory = 100 + (50 if lr_effect and lr == 0.1 else 0)
                        cpu = 20 + 70 * big if cpu_follows_batch else 95
                        for window in range(6):
                            trend = 1 + drift * window
                            shown = extra if not late_memory or window == 5 else 0
                            rows.append({
                                "workload": workload, "trial_id": trial, "config_id": f"b{batch},lr{lr}",
                                "batch_size": batch, "learning_rate": lr, "step": 100 * (window + 1), "window": window,
                                "large": large, "data_format": path,
                                "mean_step_ms": step * trend * rng.uniform(0.98, 1.02),
                                "cpu_percent": cpu * trend + rng.uniform(-3, 3),
                                "memory_mb": (memory + shown - (memory_rise if large and window == 0 else 0)) * trend
                                + rng.uniform(-1, 1),
                                "wall_s": step * 100 / 1000 * (window + 1),
                                "val_loss": 0.3 + 0.2 * big + 0.05 * (lr == 0.1) + 0.01 * repeat,
                            })
    return pd.DataFrame(rows)


def budget_trials(stopped: int) -> pd.DataFrame:
    return pd.DataFrame({
        "stop_rule": ["max_memory_mb"] * stopped + [None] * (4 - stopped), "cpu_s": [1.0] * 4,
        "cpu_s_saved": [5.0] * stopped + [0.0] * (4 - stopped), "memory_mb": [450.0] * stopped + [200.0] * (4 - stopped),
    })


def test_every_finding_holds_on_data_made_to_match_the_thesis():
    findings = thesis_findings(make_windows(), budget_trials(2), 400)
    assert [f.verdict for f in findings] == [Verdict.HOLDS] * 8, [f.evidence for f in findings]
    assert [f.key for f in findings] == list(THESIS_NUMBERS)
    for batch in findings[2:4]:
        assert "pandas path" in batch.evidence
        assert batch.numbers["per_path"] == {"numpy": "does not hold", "pandas": "holds"}


def test_level_within_run_flips_when_metrics_drift():
    assert finding_level_within_run(make_windows(drift=0.3)).verdict is Verdict.DOES_NOT_HOLD


def test_memory_rise_flips_when_memory_starts_at_its_plateau():
    assert finding_memory_rises_then_levels(make_windows(memory_rise=0.0)).verdict is Verdict.DOES_NOT_HOLD


@pytest.mark.parametrize("judge", [finding_batch_step_time, finding_batch_memory])
@pytest.mark.parametrize("kwargs", [{"batch_on": ()}, {"batch_on_small": True}])
def test_batch_findings_flip_without_an_effect_or_with_one_on_small_datasets(judge, kwargs):
    finding = judge(make_windows(**kwargs))
    assert finding.verdict is Verdict.DOES_NOT_HOLD
    assert "no data path shows it" in finding.evidence


@pytest.mark.parametrize("judge", [finding_batch_step_time, finding_batch_memory])
def test_batch_findings_name_both_paths_when_both_show_it(judge):
    finding = judge(make_windows(batch_on=("numpy", "pandas")))
    assert finding.verdict is Verdict.HOLDS and "every path" in finding.evidence


def test_step_time_and_memory_are_judged_separately_with_per_workload_evidence():
    windows = make_windows(batch_on=("numpy", "pandas"), memory_on=("pandas",))
    step, memory = finding_batch_step_time(windows), finding_batch_memory(windows)
    assert step.verdict is Verdict.HOLDS and step.numbers["per_path"] == {"numpy": "holds", "pandas": "holds"}
    assert "big-numpy x11" in step.evidence and "small-numpy x1.5" in step.evidence
    assert memory.verdict is Verdict.HOLDS
    assert memory.numbers["per_path"] == {"numpy": "does not hold", "pandas": "holds"}
    assert "big-pandas +250 MB" in memory.evidence and "big-numpy +0 MB" in memory.evidence
    no_step = finding_batch_step_time(make_windows(batch_on=(), memory_on=("pandas",)))
    assert no_step.verdict is Verdict.DOES_NOT_HOLD


def test_learning_rate_finding_flips_when_learning_rate_changes_cost():
    assert finding_learning_rate_no_effect(make_windows(lr_effect=True)).verdict is Verdict.DOES_NOT_HOLD


def test_cpu_finding_flips_when_cpu_follows_the_configuration():
    finding = finding_cpu_uninformative(make_windows(cpu_follows_batch=True))
    assert finding.verdict is Verdict.DOES_NOT_HOLD and finding.numbers["share_cpu_uninformative"] == 0


def test_memory_budget_finding_flips_when_no_trial_breaks_the_budget():
    assert finding_memory_budget_thesis(budget_trials(2), 400).verdict is Verdict.HOLDS
    nothing = finding_memory_budget_thesis(budget_trials(0), 400, make_windows())
    assert nothing.verdict is Verdict.DOES_NOT_HOLD and "0/4 trials" in nothing.evidence
    assert "never binds" in nothing.evidence and nothing.numbers["peak_range_mb"][1] < 400
    assert finding_memory_budget_thesis(pd.DataFrame(), 400).verdict is Verdict.INCONCLUSIVE


def test_the_thesis_budget_is_inconclusive_when_only_unbudgeted_runs_go_over_it():
    finding = finding_memory_budget_thesis(budget_trials(0), 300, make_windows())
    assert finding.verdict is Verdict.INCONCLUSIVE and finding.numbers["unbudgeted_runs_over_budget"] == 4


def test_the_thesis_budget_does_not_hold_when_its_stops_save_nothing():
    late = budget_trials(2).assign(cpu_s_saved=0.0)
    assert finding_memory_budget_thesis(late, 400).verdict is Verdict.DOES_NOT_HOLD


def test_an_in_range_budget_is_the_midpoint_of_the_configuration_peaks():
    finding = finding_memory_budget_in_range(make_windows())
    low, high = finding.numbers["peak_range_mb"]
    assert finding.numbers["budget_mb"] == pytest.approx((low + high) / 2)
    assert finding.numbers["stopped_per_workload"] == {"big-pandas": 4}  # batch 30000, both learning rates
    trials = simulate_memory_budget(make_windows(), finding.numbers["budget_mb"])
    stopped = trials[trials["stopped"]]
    assert (stopped["stop_step"] == 100).all()  # the first window is over the budget
    assert stopped["saved_cpu_s"].sum() / stopped["cpu_s"].sum() == pytest.approx(5 / 6, abs=0.02)  # 5 of 6 windows
    assert finding.numbers["saved_cpu_s"] == pytest.approx(stopped["saved_cpu_s"].sum())


@pytest.mark.parametrize(("kwargs", "shown"), [
    ({"late_memory": True}, "saves 0.0 of"),
    ({"straddle": True}, "false stops: 1 (big-pandas b30000,lr0.1)"),
])
def test_an_in_range_budget_fails_when_it_saves_nothing_or_stops_a_configuration_that_fits(kwargs, shown):
    finding = finding_memory_budget_in_range(make_windows(**kwargs))
    assert finding.verdict is Verdict.DOES_NOT_HOLD and shown in finding.evidence


def test_batch_finding_is_inconclusive_when_only_some_large_datasets_show_it():
    windows = make_windows()
    narrow = windows[windows["workload"] == "big-pandas"].assign(workload="narrow-pandas")
    narrow.loc[narrow["batch_size"] == 30000, ["mean_step_ms", "memory_mb"]] = [12.0, 101.0]
    for judge in (finding_batch_step_time, finding_batch_memory):
        finding = judge(pd.concat([windows, narrow]))
        assert finding.verdict is Verdict.INCONCLUSIVE and finding.numbers["per_path"]["pandas"] == "partial"


def test_too_little_data_is_inconclusive():
    few = make_windows().query("trial_id.str.startswith('big-numpy/b30,lr0.1/r0')", engine="python")
    assert finding_level_within_run(few).verdict is Verdict.INCONCLUSIVE
    assert finding_memory_rises_then_levels(few).verdict is Verdict.INCONCLUSIVE


def _large_only() -> pd.DataFrame:
    windows = make_windows()
    return windows[windows["large"]]


def _one_trial() -> pd.DataFrame:
    windows = make_windows()
    return windows[windows["trial_id"] == "big-numpy/b30,lr0.1/r0"]


#: (finding key, verdict) → (windows, budgeted trials, budget MB) that must yield that verdict.
#: No verdict is impossible by construction for any finding, so every pair is listed.
SCENARIOS = {
    ("level_within_run", Verdict.HOLDS): lambda: (make_windows(), budget_trials(2), 400),
    ("level_within_run", Verdict.DOES_NOT_HOLD): lambda: (make_windows(drift=0.3), budget_trials(2), 400),
    ("level_within_run", Verdict.INCONCLUSIVE): lambda: (_one_trial(), budget_trials(2), 400),
    ("memory_rises_then_levels", Verdict.HOLDS): lambda: (make_windows(), budget_trials(2), 400),
    ("memory_rises_then_levels", Verdict.DOES_NOT_HOLD): lambda: (make_windows(memory_rise=0.0), budget_trials(2), 400),
    ("memory_rises_then_levels", Verdict.INCONCLUSIVE): lambda: (_one_trial(), budget_trials(2), 400),
    ("batch_step_time", Verdict.HOLDS): lambda: (make_windows(memory_on=()), budget_trials(2), 400),
    ("batch_step_time", Verdict.DOES_NOT_HOLD): lambda: (make_windows(batch_on=(), memory_on=("pandas",)),
                                                         budget_trials(2), 400),
    ("batch_step_time", Verdict.INCONCLUSIVE): lambda: (_large_only(), budget_trials(2), 400),
    ("batch_memory", Verdict.HOLDS): lambda: (make_windows(batch_on=(), memory_on=("pandas",)), budget_trials(2), 400),
    ("batch_memory", Verdict.DOES_NOT_HOLD): lambda: (make_windows(memory_on=()), budget_trials(2), 400),
    ("batch_memory", Verdict.INCONCLUSIVE): lambda: (_large_only(), budget_trials(2), 400),
    ("learning_rate_no_effect", Verdict.HOLDS): lambda: (make_windows(), budget_trials(2), 400),
    ("learning_rate_no_effect", Verdict.DOES_NOT_HOLD): lambda: (make_windows(lr_effect=True), budget_trials(2), 400),
    ("learning_rate_no_effect", Verdict.INCONCLUSIVE): lambda: (make_windows().query("learning_rate == 0.1"),
                                                                budget_trials(2), 400),
    ("cpu_uninformative", Verdict.HOLDS): lambda: (make_windows(), budget_trials(2), 400),
    ("cpu_uninformative", Verdict.DOES_NOT_HOLD): lambda: (make_windows(cpu_follows_batch=True), budget_trials(2), 400),
    ("cpu_uninformative", Verdict.INCONCLUSIVE): lambda: (_one_trial(), budget_trials(2), 400),
    ("memory_budget_thesis", Verdict.HOLDS): lambda: (make_windows(), budget_trials(2), 400),
    ("memory_budget_thesis", Verdict.DOES_NOT_HOLD): lambda: (make_windows(), budget_trials(0), 400),
    ("memory_budget_thesis", Verdict.INCONCLUSIVE): lambda: (make_windows(), pd.DataFrame(), 400),
    ("memory_budget_in_range", Verdict.HOLDS): lambda: (make_windows(), budget_trials(2), 400),
    ("memory_budget_in_range", Verdict.DOES_NOT_HOLD): lambda: (make_windows(late_memory=True), budget_trials(2), 400),
    ("memory_budget_in_range", Verdict.INCONCLUSIVE): lambda: (make_windows(memory_on=()), budget_trials(2), 400),
}


def test_the_scenarios_cover_every_finding_and_every_verdict():
    keys = [f.key for f in thesis_findings(make_windows(), budget_trials(2), 400)]
    assert keys == list(THESIS_NUMBERS)
    assert set(SCENARIOS) == {(key, verdict) for key in keys for verdict in Verdict}


@pytest.mark.parametrize(("key", "verdict"), list(SCENARIOS), ids=[f"{k}-{v.name}" for k, v in SCENARIOS])
def test_every_finding_can_hold_fail_and_be_inconclusive(key, verdict):
    windows, budgeted, budget_mb = SCENARIOS[key, verdict]()
    finding = {f.key: f for f in thesis_findings(windows, budgeted, budget_mb)}[key]
    assert finding.verdict is verdict, finding.evidence
    assert finding.evidence


def test_a_step_time_ratio_reads_as_a_ratio_at_any_size():
    from frugalml.reproduce._findings import _times

    assert [_times(x) for x in (1.234, 37.6, 123.4, 1530.0)] == ["x1.2", "x38", "x120", "x1500"]  # not x1.2e+02
