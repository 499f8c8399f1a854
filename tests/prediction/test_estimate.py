"""In-trial prediction on windows of real trials (and real windows bent into known shapes)."""

from __future__ import annotations

import pytest

from frugalml import ConfigError, Window
from frugalml.prediction import estimate_trial


def with_values(windows, name, values):
    return [Window(w.step, {**w.values, name: v}) for w, v in zip(windows, values)]


def test_bounds_hold_the_value_and_memory_never_falls_below_what_was_seen(real_records):
    for record in real_records:
        first = record.windows[:2]
        estimate = estimate_trial(first, steps_planned=record.steps_planned, confidence=0.9)
        for field in ("steady_step_ms", "mean_step_ms", "peak_memory_mb", "total_s"):
            value, low, high = getattr(estimate, field)
            assert 0 < low <= value <= high, field
        assert estimate.peak_memory_mb.low == max(w.values["memory_mb"] for w in first)
        # real diabetes trials: memory is flat, so two windows already give the peak
        assert estimate.peak_memory_mb.value == pytest.approx(record.peak("memory_mb"), rel=0.10)
        # time: windows of 5 steps last milliseconds, so one paused window skews a rate; with
        # four windows the median of three rates leaves it out
        later = estimate_trial(record.windows[:4], steps_planned=record.steps_planned, confidence=0.9)
        assert later.total_s.value == pytest.approx(record.windows[-1].values["wall_s"], rel=1.0)


def test_the_first_window_is_warm_up_and_left_out_of_the_steady_step_time(real_records):
    windows = list(real_records[0].windows[:4])
    slow_start = with_values(windows, "mean_step_ms", [50.0, 10.0, 12.0, 11.0])
    estimate = estimate_trial(slow_start, steps_planned=40)
    assert estimate.steady_step_ms.value == 11.0
    # the trial's mean keeps the slow window it already had: (50 + 10 + 12 + 11 + 4 * 11) / 8
    assert estimate.mean_step_ms.value == pytest.approx(127 / 8)


def test_a_warm_up_rise_in_memory_is_not_extrapolated_to_the_end(real_records):
    windows = list(real_records[0].windows)  # steps 5, 10, ..., 40
    rising = with_values(windows, "memory_mb", [100, 140, 160, 170, 175, 177, 178, 178.5])
    early = estimate_trial(rising[:4], steps_planned=100_000)
    assert early.peak_memory_mb.value == pytest.approx(180)  # rises 20, 10: the rest is 5 + 2.5 + ... = 10
    assert early.peak_memory_mb.low == 170  # never stopped on a rise that is levelling off
    assert early.peak_memory_mb.high > early.peak_memory_mb.value
    late = estimate_trial(rising, steps_planned=100_000)
    assert late.peak_memory_mb.value == pytest.approx(178.5, abs=3)


def test_a_steady_leak_is_extrapolated_and_its_lower_bound_rises(real_records):
    windows = list(real_records[0].windows)
    leaking = with_values(windows, "memory_mb", [100 + 10 * i for i in range(8)])  # 2 MB per step
    estimate = estimate_trial(leaking, steps_planned=80)
    peak = 170
    assert estimate.peak_memory_mb.value == pytest.approx(peak + 2 * 40, rel=0.01)  # to the end, 40 steps on
    # the lower bound extrapolates only as far ahead as the rise was watched (steps 10 to 40)
    assert peak < estimate.peak_memory_mb.low <= peak + 2 * 30 + 1e-6
    assert estimate.peak_memory_mb.high >= peak + 2 * 40


def test_higher_confidence_widens_the_bounds(real_records):
    windows = real_records[1].windows[:5]
    loose = estimate_trial(windows, steps_planned=40, confidence=0.6).steady_step_ms
    strict = estimate_trial(windows, steps_planned=40, confidence=0.99).steady_step_ms
    assert strict.low <= loose.low <= loose.value == strict.value <= loose.high <= strict.high


def test_unknown_length_leaves_the_total_unknown_and_bad_confidence_is_one_line(real_records):
    assert estimate_trial(real_records[0].windows[:2]).total_s is None
    with pytest.raises(ConfigError, match=r"confidence.*\[0.5, 1\).*1.5"):
        estimate_trial(real_records[0].windows, confidence=1.5)
