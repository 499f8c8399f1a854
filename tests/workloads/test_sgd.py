from __future__ import annotations

import math
import tracemalloc

import pytest

from frugalml.exceptions import ConfigError
from frugalml.messages import FirstStep, Info, WindowEnd
from frugalml.workloads import steps_planned


def windows(messages):
    return [m for m in messages if isinstance(m, WindowEnd)]


@pytest.mark.parametrize(
    ("dataset", "algorithm"),
    [
        ("diabetes", "perceptron"),
        ("diabetes", "logistic_regression"),
        ("diabetes", "svm"),
        ("red_wine", "linear_regression"),
        ("red_wine", "svm"),
    ],
)
def test_every_algorithm_learns(request, train, dataset, algorithm):
    data = request.getfixturevalue(dataset)
    trial, messages = train(data, algorithm, epochs=3)
    found = windows(messages)
    # diabetes: 17 steps per epoch, 51 in all, so 5 full windows and a final partial one
    assert trial.steps == steps_planned(data.n_train, 32, 3, None)
    assert [w.step for w in found] == [*range(10, trial.steps + 1, 10), trial.steps]
    assert all(w.metrics for w in found) and sum(w.samples for w in found) == 3 * data.n_train
    final = found[-1].metrics
    assert math.isfinite(final["val_loss"]) and all(math.isfinite(x) for x in found[-1].losses)
    if data.task == "classification":
        assert final["accuracy"] > 0.7  # the majority class is 65%
    else:
        assert final["rmse"] < 0.75  # predicting the mean gives about 0.8


def test_no_extra_report_when_the_last_step_ends_a_window(train, diabetes):
    trial, messages = train(diabetes, "svm", epochs=3, max_steps=20, eval_every=10)
    assert trial.steps == 20 and [w.step for w in windows(messages)] == [10, 20]
    assert [type(m) for m in messages] == [FirstStep, WindowEnd, WindowEnd]  # first_step: the setup's end


@pytest.mark.parametrize("dataset, metric", [("diabetes", "accuracy"), ("red_wine", "rmse")])
def test_eval_rows_samples_the_windows_before_the_last(request, train, dataset, metric):
    data = request.getfixturevalue(dataset)
    found = [windows(train(data, "svm", epochs=2, **kwargs)[1]) for kwargs in ({}, {"eval_rows": 50})]
    whole, sampled = ([w.metrics for w in ws] for ws in found)
    assert [w.step for w in found[0]] == [w.step for w in found[1]] and len(whole) > 2
    assert sampled[-1] == whole[-1]  # the final partial window: the whole test split
    assert any(s[metric] != w[metric] for s, w in zip(sampled[:-1], whole[:-1]))
    if metric == "accuracy":
        assert all((s["accuracy"] * 50) == pytest.approx(round(s["accuracy"] * 50)) for s in sampled[:-1])


def test_batch_larger_than_training_split_is_clamped(train, diabetes):
    trial, messages = train(diabetes, "logistic_regression", batch_size=10_000, epochs=2, eval_every=5)
    info = [m.info for m in messages if isinstance(m, Info)]
    assert info == [{"batch_size": 537, "batch_size_clamped": True, "requested_batch_size": 10_000}]
    assert trial.steps == 2 and windows(messages)[-1].samples == 2 * 537


def test_steps_planned():
    assert steps_planned(537, 32, 3, None) == 51
    assert steps_planned(537, 32, 3, 40) == 40
    assert steps_planned(537, 10_000, 2, None) == 2
    assert steps_planned(100, 100, 1, None) == 1


@pytest.mark.parametrize(
    ("params", "kwargs", "match"),
    [
        ({"batch_size": 0}, {}, r"'batch_size' parameter of sgd_train must be an int in the range \[1, inf\). Got 0"),
        ({"batch_size": 2.5}, {}, "'batch_size' parameter"),
        ({"batch_size": True}, {}, "'batch_size' parameter"),
        ({"batch_size": float("nan")}, {}, "'batch_size' parameter"),
        ({"batch_size": None}, {}, "'batch_size' parameter"),
        ({"learning_rate": 0}, {}, r"'learning_rate' parameter of sgd_train must be a float in the range \(0, inf\)"),
        ({"learning_rate": -0.1}, {}, "'learning_rate' parameter"),
        ({}, {"alpha": -1.0}, r"'alpha' parameter of sgd_train must be a number in the range \[0, inf\)"),
        ({}, {"data_format": "arrow"}, "data_format must be one of"),
        ({}, {"epochs": 0}, "'epochs' parameter"),
        ({}, {"algorithm": "linear_regression"}, "is for regression but dataset 'diabetes'"),
    ],
)
def test_invalid_configuration_raises_config_error(train, diabetes, params, kwargs, match):
    kwargs = {"algorithm": "svm", **kwargs}
    with pytest.raises(ConfigError, match=match):
        train(diabetes, kwargs.pop("algorithm"), **params, **kwargs)


def test_alpha_is_the_l2_strength(train, diabetes):
    strong = windows(train(diabetes, "svm", epochs=3, alpha=1.0)[1])[-1].metrics["val_loss"]
    weak = windows(train(diabetes, "svm", epochs=3, alpha=1e-6)[1])[-1].metrics["val_loss"]
    default = windows(train(diabetes, "svm", epochs=3)[1])[-1].metrics["val_loss"]
    assert strong > weak + 0.05  # weights shrunk towards zero fit worse (measured 0.61 vs 0.51)
    assert default == windows(train(diabetes, "svm", epochs=3, alpha=0.0001)[1])[-1].metrics["val_loss"]


def test_divergence_is_reported_not_raised(train, red_wine):
    trial, messages = train(red_wine, "linear_regression", learning_rate=1e300)
    assert {"diverged": True} in [m.info for m in messages if isinstance(m, Info)]
    assert windows(messages)[-1].metrics == {"val_loss": math.inf, "rmse": math.inf}


def test_pandas_batches_are_copies_numpy_batches_are_not(train, mnist):
    """The thesis's memory effect: a DataFrame batch is copied by scikit-learn, a memory-mapped
    numpy slice is not. One batch of 30000 MNIST rows in float64 is about 180 MB."""
    batch_mb = 30_000 * mnist.n_features * 8 / 2**20
    mnist.frame()  # build the column-major file outside the measurement
    peaks, metrics = {}, {}
    for data_format in ("numpy", "pandas"):
        tracemalloc.start()
        _, messages = train(mnist, "svm", batch_size=30_000, max_steps=1, data_format=data_format)
        peaks[data_format] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        metrics[data_format] = windows(messages)[-1].metrics
    assert peaks["numpy"] < 0.25 * batch_mb < batch_mb * 0.9 < peaks["pandas"], peaks
    assert metrics["numpy"] == pytest.approx(metrics["pandas"])  # same model either way
    assert metrics["numpy"]["accuracy"] > 0.8
