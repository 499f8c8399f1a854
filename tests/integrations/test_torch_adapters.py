"""PyTorch, Lightning, Keras and Transformers users: each framework's own training loop,
tuned under a memory budget that stops the large model mid-training, the best model
registered and served (Lightning's and the BERT's: the others' flavors are served by the
tests named in CASES); the same adapters under the in-process executor; bad input.

Real data (../shared/data), real worker processes watched by the parent, a real MLflow
sqlite store and real server processes on 127.0.0.1. Peak memory (RSS minus shared) of a
worker, measured on the 2-core machine, small / large configuration: torch MLP 32 /
32768 hidden ~440 / ~1120 MB; Lightning ~520 / ~1200 MB; Keras ~545 / ~1250 MB; the
2-layer BERT (32 / 1024 hidden) ~480 / ~970 MB. The small ones were 25-60 MB more (torch's
read 615 MB once, under load) while the forkserver imported scikit-learn and pandas for every
study; the large ones were measured then, unstopped. Each budget lies between, 300-400 MB above
the small one; the large one's weights alone stay 150-250 MB under it, so it is stopped only
once training (gradients, optimiser state) has begun, after the adapter planned it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import torch_trainers
from frugalml import ConfigError, Search, Study, TrialStatus, TrialUsageError, Workload, tune
from frugalml.executors import InProcessExecutor
from frugalml.flavors import load_saved
from frugalml.messages import Message, Plan, WindowEnd
from frugalml.registry import register
from helpers import ServerProcess

HERE = Path(__file__).resolve().parent
# Keras (torch backend) converts its variables with np.array(x, copy=False) on every predict call
pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
              pytest.mark.usefixtures("one_torch_thread")]


def _network_labels(model: Any, rows: np.ndarray) -> list[int]:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(rows)).argmax(1).tolist()


def _keras_labels(model: Any, rows: np.ndarray) -> list[int]:
    return model.predict(rows, verbose=0).argmax(1).tolist()


def _mnist_rows() -> np.ndarray:
    return torch_trainers.mnist()[2][:20]


def _diabetes_rows() -> np.ndarray:
    return torch_trainers.diabetes()[0].head(20).to_numpy()


@dataclass(frozen=True)
class Case:
    train: Callable[..., None]
    small: int  # hidden units of the configuration that fits
    large: int  # ... and of the one whose weights and optimiser state break the budget
    budget_mb: int
    steps: int  # what the adapter plans: epochs x batches per epoch
    eval_every: int
    lr: float
    flavor: str
    rows: Callable[[], np.ndarray]
    labels: Callable[[Any, np.ndarray], list[int]]
    served: bool = True  # False: no MLflow, no register; a test that tracks, registers and serves the flavor is named


CASES = {
    # a plain torch model registered from its trial's run and served: tests/serve/test_network_classifier.py;
    # mlflow.pytorch served as the trial's own model: "lightning" here
    "torch": Case(torch_trainers.torch_mlp, 32, 32768, 750, 2 * 47, 10, 0.001, "mlflow.pytorch", _mnist_rows,
                  _network_labels, served=False),
    "lightning": Case(torch_trainers.lightning_mlp, 32, 32768, 850, 2 * 47, 10, 0.001, "mlflow.pytorch",
                      _mnist_rows, _network_labels),
    # registered from its trial's run and served as the trial's own model: tests/serve/test_keras_backend.py
    "keras": Case(torch_trainers.keras_mlp, 32, 32768, 850, 2 * 47, 10, 0.001, "mlflow.keras", _mnist_rows,
                  _keras_labels, served=False),
    "transformers": Case(torch_trainers.transformers_bert, 32, 1024, 850, 3 * 19, 19, 0.005, "mlflow.pyfunc",
                         _diabetes_rows, lambda model, rows: model.predict(rows).tolist()),
}


@pytest.mark.parametrize("framework", list(CASES))
def test_a_frameworks_own_loop_is_stopped_for_memory_mid_training_and_its_best_model_is_served(
        framework, tmp_path, monkeypatch):
    case = CASES[framework]
    directory = tmp_path / "study"
    study = Study(name=framework, workloads=[Workload(train=case.train, eval_every=case.eval_every, name="fit")],
                  search=Search(space={"hidden": [case.small, case.large], "lr": [case.lr]}),
                  budget={"max_memory_mb": case.budget_mb}, workers=2, directory=str(directory),
                  mlflow_uri="default" if case.served else None)
    result = tune(study)
    trials = {r.params["hidden"]: r for r in result.records}
    small, large = trials[case.small], trials[case.large]

    assert small.status is TrialStatus.COMPLETED, small.error
    assert small.steps_done == small.steps_planned == case.steps  # planned by the adapter
    assert small.peak("memory_mb") < case.budget_mb - 150, small.peak("memory_mb")
    assert small.last("val_loss") is not None and small.last("accuracy") > 0.5  # validation reported
    assert large.status is TrialStatus.STOPPED, (large.status, large.error)
    assert large.stop.rule == "max_memory_mb" and large.stop.value > case.budget_mb
    assert large.steps_planned == case.steps > large.steps_done  # planned, then stopped mid-training
    assert large.cpu_s_saved > 0 or large.saved_basis == "unknown"  # unknown: stopped before its first window
    assert result.best_feasible("fit").params["hidden"] == case.small
    assert small.info["model"]["flavor"] == case.flavor
    if not case.served:
        return

    version = register(directory, alias="champion")
    monkeypatch.setenv("PYTHONPATH", str(HERE))  # the served model's own classes (LitMLP, TokenClassifier)
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    server = ServerProcess(f"models:/{framework}-fit@champion", "--tracking-uri", version.tracking_uri,
                           log=tmp_path / "server.log").wait_ready()
    try:
        rows = case.rows()
        answer = server.client.post("/predict", json={"instances": rows.tolist()})
        assert answer.status_code == 200, answer.text
        trained, _, _ = load_saved(small.info["model"]["path"])
        expected = case.labels(trained, rows)
        assert answer.json()["predictions"] == expected  # the trial's own model, served
        assert len(set(expected)) > 1  # a model that learned something, not one constant label
    finally:
        server.stop()


def twenty_steps(view) -> str | None:
    """A stopping rule: stop at the first window that ends at or after step 20."""
    return "20 steps are enough" if view.steps_done >= 20 else None


@pytest.mark.parametrize("framework", ["torch", "lightning", "keras", "transformers"])
def test_a_stop_raised_in_process_ends_the_frameworks_loop_its_own_way_and_is_recorded(framework, tmp_path):
    case = CASES[framework]
    study = Study(name=f"inline-{framework}", workloads=[Workload(train=case.train, eval_every=10, name="fit")],
                  search=Search(space={"hidden": [case.small], "lr": [case.lr]}), rules=[twenty_steps],
                  directory=str(tmp_path / "study"), mlflow_uri=None)
    (record,) = tune(study, executor=InProcessExecutor).records
    assert record.status is TrialStatus.STOPPED, record.error
    assert record.stop.rule == "twenty_steps"
    assert record.steps_done == 20 and record.steps_planned == case.steps
    ended = torch_trainers.ENDED.pop(framework)  # the framework's own state when its loop returned
    if framework == "torch":  # the plain loop's own trial.report (after step 20) raised the stop
        assert ended["steps"] == 20
    else:  # step 21's call ended window 20 and raised; the callback set the framework's flag, the loop ended
        assert ended["steps"] == 21 and ended["stop_flag"] is True


@pytest.mark.parametrize("make", [
    lambda trial: __import__("frugalml.integrations.torch", fromlist=["Batches"]).Batches(trial, [[1]]),
    lambda trial: __import__("frugalml.integrations.lightning", fromlist=["x"]).FrugalmlCallback(trial),
    lambda trial: __import__("frugalml.integrations.keras", fromlist=["x"]).FrugalmlCallback(trial),
    lambda trial: __import__("frugalml.integrations.transformers", fromlist=["x"]).FrugalmlCallback(trial),
], ids=["torch", "lightning", "keras", "transformers"])
def test_an_adapter_given_something_other_than_a_trial_says_so_in_one_line(make):
    with pytest.raises(TrialUsageError) as error:
        make({"hidden": 32})
    assert "\n" not in str(error.value) and "Got dict instead" in str(error.value)


def test_batches_says_how_to_plan_a_loader_without_a_length_and_checks_epochs():
    from frugalml import Trial
    from frugalml.integrations.torch import Batches

    with pytest.raises(TrialUsageError, match="steps_per_epoch=N"):
        Batches(Trial({}), iter([1, 2]))
    with pytest.raises(ConfigError, match="The 'epochs' parameter of Batches must be an int in the range"):
        Batches(Trial({}), [1, 2], epochs=0)
    class Unsized:  # an IterableDataset's loader: batches, no len()
        def __iter__(self):
            return iter([(np.zeros((3, 784)), np.zeros(3))] * 5)

    messages: list[Message] = []
    trial = Trial({}, eval_every=2, send=messages.append)
    batches = Batches(trial, Unsized(), 2, steps_per_epoch=2)
    ends = [(batches.epoch, batches.step(np.float32(0.5))) for _ in batches]
    trial.report(val_loss=1.0)
    assert ends == [(0, False), (0, True), (1, False), (1, True)] and trial.steps == 4
    assert messages[0] == Plan(steps=4)
    windows = [m for m in messages if isinstance(m, WindowEnd)]
    assert [(w.n_steps, w.samples, w.train_loss) for w in windows] == [(2, 6, 0.5), (2, 6, 0.5)]
