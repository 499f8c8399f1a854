"""Skipping configurations the cost model predicts over budget, on real mnist_784 trials."""

from __future__ import annotations

import pytest

from frugalml import ConfigError, ResultStore, Search, Study, TrialStatus, Workload, load_study, tune
from frugalml.prediction import SKIP_REASON


@pytest.fixture(scope="module")
def skipping(tmp_path_factory):
    """Batches 30..6000 fit a 200 MB budget (about 120-155 MB); 30000 needs about 300 MB.

    The data is a pandas frame sliced per batch, so each batch is a real copy. The grid
    runs the small batches first, then 30000 (predicted from them), then 100. Batch 6000
    is there so the slope is measured at two sizes that copy visibly: with 3000 alone,
    a noisy small-batch peak widened the 90% band below 200 MB in about one run in
    four and nothing was skipped (the cautious, correct answer, but not this test's).
    """
    directory = tmp_path_factory.mktemp("skip")
    study = Study(**study_args(directory))
    return tune(study), directory


def test_a_configuration_predicted_over_budget_is_skipped_with_its_prediction(skipping):
    result, directory = skipping
    skipped = [r for r in result.records if r.status is TrialStatus.SKIPPED]
    assert skipped and {r.params["batch_size"] for r in skipped} == {30000}
    for record in skipped:
        prediction = record.info["prediction"]
        assert record.info["reason"] == SKIP_REASON
        assert prediction["budget"] == "max_memory_mb" and prediction["low"] > 200
        assert prediction["low"] <= prediction["predicted"] <= (prediction["high"] or prediction["predicted"])
        assert record.stop.rule == "skipped_max_memory_mb" and not record.feasible
        assert record.cpu_s == 0  # and 10x beyond the batches the model saw, its saving is not claimed:
        assert record.saved_basis == "unknown" and record.cpu_s_saved == 0
    stored = {r.trial_id: r for r in ResultStore(directory).trials()}
    assert all(stored[r.trial_id].status is TrialStatus.SKIPPED for r in skipped)
    ran = [r for r in result.records if r.status is not TrialStatus.SKIPPED]
    assert all(r.params["batch_size"] == 30000 or r.status is TrialStatus.COMPLETED for r in ran)
    account = result.compute()
    assert account.skipped == len(skipped) and "skip" in account.unknown  # shown as unknown, not as 0


def test_every_trial_run_after_the_model_is_ready_is_rechecked(skipping):
    result, _ = skipping
    late = [r for r in result.records if r.params["batch_size"] == 100]
    assert late
    for record in late:
        check = record.info["cost_prediction"]
        memory = check["peak_memory_mb"]
        assert memory["measured"] == pytest.approx(record.peak("memory_mb"))
        assert memory["error"] == pytest.approx(memory["predicted"] / memory["measured"] - 1)
        assert check["observations"] >= 4


def test_resume_keeps_skipped_configurations_skipped(skipping, tmp_path):
    result, directory = skipping
    again = tune(Study(**study_args(directory)), resume=True)
    assert len(again.records) == len(result.records)


def study_args(directory):
    return dict(
        name="skip",
        workloads=[Workload(dataset="mnist_784", algorithm="logistic_regression", data_format="pandas",
                            epochs=100, max_steps=6, eval_every=3)],
        search=Search(space={"batch_size": [30, 300, 3000, 6000, 30000, 100], "learning_rate": [0.01, 0.001]}),
        budget={"max_memory_mb": 200}, prediction={"confidence": 0.9, "min_observations": 4},
        workers=2, directory=str(directory), mlflow_uri=None,
    )


def test_prediction_settings_are_checked_when_the_study_loads(tmp_path):
    base = '[study]\nname = "s"\n[[workloads]]\ndataset = "diabetes"\nalgorithm = "svm"\n'
    (tmp_path / "a.toml").write_text(base + "[prediction]\nskip = true\n")
    with pytest.raises(ConfigError, match=r"\[prediction\] needs a \[budget\]"):
        load_study(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text(base + "[budget]\nmax_memory_mb = 300\n[prediction]\nconfidance = 0.9\n")
    with pytest.raises(ConfigError, match="Unknown key.*confidance"):
        load_study(tmp_path / "b.toml")
    (tmp_path / "c.toml").write_text(
        base + '[budget]\nmax_memory_mb = 300\n[prediction]\nconfidence = 0.95\nhistory = ["old"]\n'
    )
    study = load_study(tmp_path / "c.toml")
    assert study.prediction_settings().history == (str(tmp_path / "old"),)
