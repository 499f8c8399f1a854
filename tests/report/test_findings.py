"""Each thesis verdict is a pure function of the data: feed data where a finding fails
and the verdict flips."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from frugalml.reproduce import (
    Verdict, finding_batch_raises_cost_on_large_only, finding_cpu_uninformative, finding_learning_rate_no_effect,
    finding_level_within_run, finding_memory_budget_saves, finding_memory_rises_then_levels, thesis_findings,
)


def make_windows(*, drift: float = 0.0, memory_rise: float = 50.0, batch_on: tuple[str, ...] = ("pandas",),
                 batch_on_small: bool = False, lr_effect: bool = False, cpu_follows_batch: bool = False) -> pd.DataFrame:
    """Synthetic windows in which, by default, every thesis finding holds."""
    rng = np.random.default_rng(0)
    rows = []
    for path in ("numpy", "pandas"):
        for large in (True, False):
            workload = f"{'big' if large else 'small'}-{path}"
            effect = path in batch_on and (large or batch_on_small)
            for batch in (30, 30000):
                for lr in (0.1, 0.001):
                    for repeat in range(2):
                        trial = f"{workload}/b{batch},lr{lr}/r{repeat}"
                        big = batch == 30000
                        step = 10 * (11 if effect and big else 1.5 if big else 1.0) * (2 if lr_effect and lr == 0.1 else 1)
                        memory = 100 + (300 if effect and big else 0) + (50 if lr_effect and lr == 0.1 else 0)
                        cpu = 20 + 70 * big if cpu_follows_batch else 95
                        for window in range(6):
                            trend = 1 + drift * window
                            rows.append({
                                "workload": workload, "trial_id": trial, "config_id": f"b{batch},lr{lr}",
                                "batch_size": batch, "learning_rate": lr, "step": 100 * (window + 1), "window": window,
                                "large": large, "data_format": path,
                                "mean_step_ms": step * trend * rng.uniform(0.98, 1.02),
                                "cpu_percent": cpu * trend + rng.uniform(-3, 3),
                                "memory_mb": (memory - (memory_rise if large and window == 0 else 0)) * trend
                                + rng.uniform(-1, 1),
                            })
    return pd.DataFrame(rows)


def budget_trials(stopped: int) -> pd.DataFrame:
    return pd.DataFrame({
        "stop_rule": ["max_memory_mb"] * stopped + [None] * (4 - stopped), "cpu_s": [1.0] * 4,
        "cpu_s_saved": [5.0] * stopped + [0.0] * (4 - stopped), "memory_mb": [450.0] * stopped + [200.0] * (4 - stopped),
    })


def test_every_finding_holds_on_data_made_to_match_the_thesis():
    findings = thesis_findings(make_windows(), budget_trials(2), 400)
    assert [f.verdict for f in findings] == [Verdict.HOLDS] * 6, [f.evidence for f in findings]
    batch = findings[2]
    assert "pandas path" in batch.evidence and batch.numbers["per_path"] == {"numpy": "does not hold", "pandas": "holds"}


def test_level_within_run_flips_when_metrics_drift():
    assert finding_level_within_run(make_windows(drift=0.3)).verdict is Verdict.DOES_NOT_HOLD


def test_memory_rise_flips_when_memory_starts_at_its_plateau():
    assert finding_memory_rises_then_levels(make_windows(memory_rise=0.0)).verdict is Verdict.DOES_NOT_HOLD


@pytest.mark.parametrize("kwargs", [{"batch_on": ()}, {"batch_on_small": True}])
def test_batch_finding_flips_without_an_effect_or_with_one_on_small_datasets(kwargs):
    finding = finding_batch_raises_cost_on_large_only(make_windows(**kwargs))
    assert finding.verdict is Verdict.DOES_NOT_HOLD
    assert "no data path shows it" in finding.evidence


def test_batch_finding_names_both_paths_when_both_show_it():
    finding = finding_batch_raises_cost_on_large_only(make_windows(batch_on=("numpy", "pandas")))
    assert finding.verdict is Verdict.HOLDS and "every path" in finding.evidence


def test_learning_rate_finding_flips_when_learning_rate_changes_cost():
    assert finding_learning_rate_no_effect(make_windows(lr_effect=True)).verdict is Verdict.DOES_NOT_HOLD


def test_cpu_finding_flips_when_cpu_follows_the_configuration():
    finding = finding_cpu_uninformative(make_windows(cpu_follows_batch=True))
    assert finding.verdict is Verdict.DOES_NOT_HOLD and finding.numbers["share_cpu_uninformative"] == 0


def test_memory_budget_finding_flips_when_no_trial_breaks_the_budget():
    assert finding_memory_budget_saves(budget_trials(2), 400).verdict is Verdict.HOLDS
    nothing = finding_memory_budget_saves(budget_trials(0), 400)
    assert nothing.verdict is Verdict.DOES_NOT_HOLD and "0/4 trials" in nothing.evidence
    assert finding_memory_budget_saves(pd.DataFrame(), 400).verdict is Verdict.INCONCLUSIVE


def test_batch_finding_is_inconclusive_when_only_some_large_datasets_show_it():
    windows = make_windows()
    narrow = windows[windows["workload"] == "big-pandas"].assign(workload="narrow-pandas")
    narrow.loc[narrow["batch_size"] == 30000, ["mean_step_ms", "memory_mb"]] = [12.0, 101.0]
    finding = finding_batch_raises_cost_on_large_only(pd.concat([windows, narrow]))
    assert finding.verdict is Verdict.INCONCLUSIVE and finding.numbers["per_path"]["pandas"] == "partial"


def test_too_little_data_is_inconclusive():
    few = make_windows().query("trial_id.str.startswith('big-numpy/b30,lr0.1/r0')", engine="python")
    assert finding_level_within_run(few).verdict is Verdict.INCONCLUSIVE
    assert finding_memory_rises_then_levels(few).verdict is Verdict.INCONCLUSIVE
