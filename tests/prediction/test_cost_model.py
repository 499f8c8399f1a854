"""The cross-configuration cost model: linear in batch MB, learning rate left out."""

from __future__ import annotations

import math

import pytest

from frugalml import ConfigError, StopInfo, TrialRecord, TrialStatus, Window
from frugalml.prediction import CostModel, DatasetShape, observed_costs

SHAPE = DatasetShape(n_train=49_000, n_features=784)  # mnist_784's training split


def batch_mb(batch: int) -> float:
    return min(batch, SHAPE.n_train) * SHAPE.n_features * 8 / 2**20


def record(batch: int, lr: float, *, noise: float = 1.0, status=TrialStatus.COMPLETED, stop=None) -> TrialRecord:
    """A trial whose costs follow memory = 117 + 1.0 * batch MB, step = 20 + 4 * batch MB (ms)."""
    memory = (117 + batch_mb(batch)) * noise
    step = (20 + 4 * batch_mb(batch)) * noise
    windows = tuple(Window(10 * i, {"mean_step_ms": step * (3 if i == 1 else 1), "memory_mb": memory})
                    for i in range(1, 5))
    return TrialRecord(
        trial_id=f"w/{batch},{lr}/r0", number=0, workload="w", config_id=f"{batch},{lr}", repeat=0,
        params={"batch_size": batch, "learning_rate": lr}, status=status, steps_done=40, steps_planned=40,
        cpu_s=step * 40 / 1000, windows=windows, stop=stop,
    )


def grid(batches, noises=(0.97, 1.03)):
    return [record(b, lr, noise=n) for b in batches for lr, n in zip((0.1, 0.001), noises)]


def test_observed_costs_leave_out_the_warm_up_window():
    costs = observed_costs(record(300, 0.1))
    assert costs["mean_step_ms"] == pytest.approx(20 + 4 * batch_mb(300))
    assert costs["peak_memory_mb"] == pytest.approx(117 + batch_mb(300))


def test_an_unseen_batch_size_is_predicted_within_its_bounds():
    model = CostModel(min_observations=4).fit(grid([30, 300, 3000]), SHAPE)
    predicted = model.predict({"batch_size": 30000, "learning_rate": 0.05})
    true_memory, true_step = 117 + batch_mb(30000), 20 + 4 * batch_mb(30000)
    assert predicted["peak_memory_mb"].value == pytest.approx(true_memory, rel=0.05)
    assert predicted["peak_memory_mb"].low <= true_memory <= predicted["peak_memory_mb"].high
    assert predicted["mean_step_ms"].low <= true_step <= predicted["mean_step_ms"].high


def test_learning_rate_does_not_change_a_prediction():
    model = CostModel(min_observations=4).fit(grid([30, 300, 3000]), SHAPE)
    assert model.predict({"batch_size": 3000, "learning_rate": 0.1}) == model.predict(
        {"batch_size": 3000, "learning_rate": 1e-4}
    )


def test_nothing_is_predicted_before_enough_trials_or_without_the_feature():
    assert not CostModel(min_observations=4).fit(grid([30]) + [record(300, 0.1)], SHAPE).predict({"batch_size": 99})
    model = CostModel(min_observations=4).fit(grid([30, 300, 3000]), SHAPE)
    assert model.predict({"learning_rate": 0.1}) == {}


def test_batches_larger_than_the_data_cost_what_the_whole_split_costs():
    model = CostModel(min_observations=4).fit(grid([30, 300, 3000]), SHAPE)
    assert model.predict({"batch_size": 49_000}) == model.predict({"batch_size": 10**6})


def test_stopped_trials_count_but_skipped_and_failed_ones_do_not():
    stopped = record(30000, 0.1, status=TrialStatus.STOPPED,
                     stop=StopInfo("max_memory_mb", "system", 1, 401.0, 400.0, "memory"))
    skipped = record(30000, 0.01, status=TrialStatus.SKIPPED)
    failed = record(3000, 0.01, status=TrialStatus.FAILED)
    model = CostModel(min_observations=4).fit(grid([30, 300]) + [stopped, skipped, failed], SHAPE)
    assert model.n_observations_ == 5


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="min_observations.*Got 1"):
        CostModel(min_observations=1)
    with pytest.raises(ConfigError, match="features"):
        CostModel(features="batch_size")


def gate(records, budget, **settings):
    from frugalml.prediction import CostScreen, PredictionSettings

    return CostScreen(PredictionSettings(**settings), budget, "w", SHAPE, lambda: records)


def test_the_gate_skips_what_the_model_puts_over_budget_at_the_confidence():
    records = grid([30, 300, 3000, 10000])
    skipped = gate(records, {"max_memory_mb": 250}).skip(
        config_id="30000", params={"batch_size": 30000, "learning_rate": 0.1}, steps_planned=40, number=9)
    prediction = skipped.info["prediction"]
    assert prediction["basis"].startswith("cost model") and prediction["low"] > 250
    assert prediction["predicted"] == pytest.approx(117 + batch_mb(30000), rel=0.05)
    # 3x beyond the largest batch the model saw: skipped on memory, but its saving is not claimed
    assert skipped.saved_basis == "unknown" and skipped.cpu_s_saved == 0
    near = gate(records, {"max_memory_mb": 250}).predicted_cpu_s_per_step({"batch_size": 15000}, 40)
    assert near == pytest.approx((20 + 4 * batch_mb(15000)) / 1000, rel=0.1)  # within 2x of it: credited
    # a budget just above the predicted cost is not broken at 90% confidence
    assert gate(records, {"max_memory_mb": 310}).skip(
        config_id="30000", params={"batch_size": 30000}, steps_planned=40, number=9) is None
    # skip = false: predict (for the re-check) but never skip
    assert gate(records, {"max_memory_mb": 250}, skip=False).skip(
        config_id="30000", params={"batch_size": 30000}, steps_planned=40, number=9) is None


def test_screening_rejects_what_may_break_the_budget_and_skipping_waits_for_what_surely_does():
    """At the edge, the point prediction fits but its 90% upper bound does not: a screening
    sampler draws again (cheap), while skipping, which loses the configuration, does not skip."""
    records = grid([30, 300, 3000, 10000])
    edge = gate(records, {"max_memory_mb": 225})
    batch = 16_500
    predicted = edge.predict({"batch_size": batch}, 40)["peak_memory_mb"]
    assert predicted.low < predicted.value < 225 < predicted.high  # the case: it may break, likely fits
    violations = edge.violations({"batch_size": batch}, 40)
    assert violations == {"max_memory_mb": pytest.approx(predicted.high / 225 - 1)}
    assert edge.skip(config_id=str(batch), params={"batch_size": batch}, steps_planned=40, number=9) is None
    assert edge.violations({"batch_size": 3000}, 40) is None  # well inside: proposed


def test_screening_rejects_a_batch_no_smaller_than_one_that_broke_the_budget_where_the_model_says_it_fits():
    """Near the edge, measured peaks scatter around the line (a bump the linear model does not
    have): a trial that broke the budget is evidence against every batch at least as large,
    which screening rejects; skipping, which must be sure, still needs the same cost features."""
    broke = record(12_000, 0.1, status=TrialStatus.STOPPED,
                   stop=StopInfo("max_memory_mb", "system", 1, 262.0, 260.0, "memory"))
    screen = gate([*grid([30, 300, 3000, 6000]), broke], {"max_memory_mb": 260})
    assert screen.predict({"batch_size": 13_000}, 40)["peak_memory_mb"].high < 260  # the model: it fits
    assert screen.violations({"batch_size": 13_000}, 40) == {"max_memory_mb": pytest.approx(262 / 260 - 1)}
    assert screen.violations({"batch_size": 11_000}, 40) is None  # smaller than the one that broke it
    assert screen.skip(config_id="13000", params={"batch_size": 13_000}, steps_planned=40, number=9) is None
    assert screen.skip(config_id="12000b", params={"batch_size": 12_000}, steps_planned=40, number=9) is not None
    # an earlier study's trial that broke a tighter budget is no evidence against this one's
    looser = gate([*grid([30, 300, 3000, 6000]), broke], {"max_memory_mb": 400})
    assert looser.violations({"batch_size": 13_000}, 40) is None
    assert looser.skip(config_id="12000b", params={"batch_size": 12_000}, steps_planned=40, number=9) is None
    # a trial's seconds depend on its steps, which the cost features leave out: no larger-batch rule there
    slow = record(12_000, 0.1, status=TrialStatus.STOPPED,
                  stop=StopInfo("max_trial_seconds", "system", 1, 70.0, 60.0, "slow"))
    timed = gate([*grid([30, 300, 3000, 6000]), slow], {"max_trial_seconds": 60})
    assert timed.violations({"batch_size": 13_000}, 1) is None


def test_a_gpu_out_of_memory_read_below_its_limit_rules_out_its_own_features_only():
    """On a shared device, CUDA runs out of memory below the trial's own budget, or frugalml reads
    nothing: the same cost features are rejected (with the least violation), larger ones are not."""
    for value in (180.0, math.nan):
        oom = record(12_000, 0.1, status=TrialStatus.STOPPED,
                     stop=StopInfo("max_gpu_memory_mb", "system", 1, value, 200.0, "CUDA out of memory"))
        screen = gate([oom], {"max_gpu_memory_mb": 200})
        violations = screen.violations({"batch_size": 12_000}, 40)
        assert list(violations) == ["max_gpu_memory_mb"] and 0 < violations["max_gpu_memory_mb"] < 1e-3
        assert screen.violations({"batch_size": 13_000}, 40) is None


def test_before_the_model_predicts_screening_grows_a_safe_region_from_the_trials_that_fit():
    """Random start-up draws far past the budget were the over-budget trials of GP search's first
    rounds; until the model predicts memory, a candidate may reach 2x the largest batch that fit."""
    from frugalml.prediction._screen import SAFE_EXPANSION

    assert SAFE_EXPANSION == 2.0
    stopped = record(25_000, 0.1, status=TrialStatus.STOPPED,
                     stop=StopInfo("max_memory_mb", "system", 1, 260.0, 250.0, "memory"))
    records: list[TrialRecord] = [stopped]
    screen = gate(records, {"max_memory_mb": 250})
    assert screen.violations({"batch_size": 20_000}, 40) is None  # nothing fitted yet: nothing known
    records.append(record(3_000, 0.1))
    assert screen.predict({"batch_size": 3_000}, 40) == {}  # 1 memory observation of the 4 needed
    assert screen.violations({"batch_size": 6_000}, 40) is None
    unknown = screen.violations({"batch_size": 15_000}, 40)  # not predicted over: not known to fit
    assert list(unknown) == ["max_memory_mb"] and math.isnan(unknown["max_memory_mb"])
    records.append(record(6_000, 0.1))  # the region grows with what fits
    assert screen.violations({"batch_size": 12_000}, 40) is None
    records.extend(grid([30, 300]))  # the model predicts memory now, and decides alone
    assert screen.predict({"batch_size": 15_000}, 40)["peak_memory_mb"].high < 250
    assert screen.violations({"batch_size": 15_000}, 40) is None


def _network_record(width: int, memory: float) -> TrialRecord:
    windows = tuple(Window(10 * i, {"mean_step_ms": 5.0 + width / 100, "memory_mb": memory}) for i in range(1, 4))
    return TrialRecord(trial_id=f"w/{width}/r0", number=0, workload="w", config_id=str(width), repeat=0,
                       params={"width": width, "batch_size": 64}, status=TrialStatus.COMPLETED, steps_done=30,
                       steps_planned=30, cpu_s=1.0, windows=windows)


def test_derived_features_predict_and_ones_the_data_cannot_tell_apart_are_dropped():
    """Memory = 100 + 2 x weights MB. With the batch never varied, 'activations' (width x
    batch) moves with 'width_units' exactly: the fit drops the later one instead of failing."""
    derive = lambda p: {"weights_mb": p["width"] ** 2 / 1000, "width_units": float(p["width"]),  # noqa: E731
                        "activations": p["width"] * p["batch_size"] / 64}
    records = [_network_record(w, 100 + 2 * w**2 / 1000) for w in (16, 32, 64, 128, 256)]
    model = CostModel(("weights_mb", "width_units", "activations"), min_observations=3, derive=derive).fit(records)
    predicted = model.predict({"width": 1024, "batch_size": 64})["peak_memory_mb"]
    assert predicted.value == pytest.approx(100 + 2 * 1024**2 / 1000, rel=0.01)
    assert model.fits_["peak_memory_mb"].beta[3] == 0.0  # the dependent column
    # the batch never varied: where activations no longer follow the width, nothing is predicted
    assert model.predict({"width": 1024, "batch_size": 256}) == {}
    assert CostModel(("width",), min_observations=3).fit(records).predict({"width": 1024})  # a plain parameter still works


def test_a_network_study_predicts_from_its_architecture_unless_it_names_its_features(tmp_path):
    from types import SimpleNamespace

    from frugalml import Study, Workload
    from frugalml.prediction import CostScreen

    mnist = SimpleNamespace(n_train=49000, n_features=784, classes=tuple(range(10)))  # the prepared data's shape

    def gate(**prediction):
        study = Study(name="g", workloads=[Workload(dataset="mnist_784", algorithm="mlp")], mlflow_uri=None,
                      budget={"max_memory_mb": 500}, prediction={"min_observations": 4, **prediction},
                      directory=str(tmp_path))
        return CostScreen.for_study(study, study.workloads[0], mnist, lambda: [])

    assert gate().model.features == ("batch_size", "weights_mb", "activations_mb", "gflops")
    assert gate(features=["batch_size"]).model.features == ("batch_size",)  # the user's choice, though the default's
    with pytest.raises(ConfigError):
        gate(features=[])
