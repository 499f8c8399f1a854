"""A Keras model registered and served with no ``KERAS_BACKEND`` set (TensorFlow not installed).

Keras 3 defaults to TensorFlow and fails to import without it; frugalml picks the backend the
model was saved with (recorded by the trial, and by MLflow in the MLmodel file) when it is
installed. Real CLI subprocesses, a real MLflow sqlite store, a real server on 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serve_helpers import ServerProcess

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="Keras is not installed"),
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow is Keras's default"),
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
]

MODULE = '''
import os

import pandas as pd

from frugalml.integrations.keras import FrugalmlCallback  # before keras: chooses the torch backend
import keras


def train(trial):
    frame = pd.read_csv(os.path.join(os.environ["FRUGALML_DATA_DIR"], "diabetes.csv.gz"))
    X = frame.drop(columns="target").to_numpy("float32") / 100.0
    y = (frame["target"] == "tested_positive").to_numpy("int64")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(trial.params["hidden"], activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.03), loss="sparse_categorical_crossentropy",  # learns in 10 steps
                  metrics=["accuracy"])
    model.fit(X[:600], y[:600], batch_size=64, epochs=1, validation_data=(X[600:], y[600:]),
              callbacks=[FrugalmlCallback(trial)], verbose=0)
    trial.log_model(model)
    trial.log_reference(X[:300], y[:300])
'''

STUDY = '''
[study]
name = "kerasb"
workers = 1
directory = "{directory}"

[[workloads]]
train = "kerasuser:train"
name = "mlp"
eval_every = 5

[search]
space = {{ hidden = [8] }}
'''


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "PYTHONPATH")}
    return {**env, **extra}


def _frugalml(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "frugalml"), *args], env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_keras_model_registers_and_serves_without_keras_backend(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "kerasuser.py").write_text(MODULE)
    (project / "study.toml").write_text(STUDY.format(directory=tmp_path / "study"))
    tuned = _frugalml("tune", str(project / "study.toml"), env=_env(PYTHONPATH=str(project)))
    assert tuned.returncode == 0, tuned.stderr

    registered = _frugalml("register", str(tmp_path / "study"), "--alias", "champion", env=_env())
    assert registered.returncode == 0, registered.stderr  # was: ModuleNotFoundError: No module named 'tensorflow'
    uri = f"sqlite:///{tmp_path / 'study' / 'mlflow.db'}"

    wrong = _frugalml("serve", "models:/kerasb-mlp@champion", "--tracking-uri", uri, "--port", "0",
                      env=_env(KERAS_BACKEND="tensorflow"))
    assert wrong.returncode == 2, wrong.stderr
    assert wrong.stderr.count("\n") == 1 and "KERAS_BACKEND=tensorflow" in wrong.stderr, wrong.stderr

    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    server = ServerProcess("models:/kerasb-mlp@champion", "--tracking-uri", uri, log=tmp_path / "server.log")
    try:
        server.wait_ready()
        frame = pd.read_csv(os.path.join(os.environ["FRUGALML_DATA_DIR"], "diabetes.csv.gz"))
        rows = frame.drop(columns="target").to_numpy("float32")[600:640] / 100.0
        answer = server.client.post("/predict", json={"instances": rows.tolist()})
        assert answer.status_code == 200, answer.text

        from frugalml.flavors import load_saved
        from frugalml.tuner import load_result

        record = load_result(tmp_path / "study").records[0]
        trained, flavor, _ = load_saved(record.info["model"]["path"])  # chooses torch in this process too
        import keras  # imported now, or by an earlier test of this process (with the backend it chose)

        assert flavor == "mlflow.keras" and keras.backend.backend() == "torch"
        expected = np.asarray(trained.predict(rows, verbose=0)).argmax(1).tolist()
        assert answer.json()["predictions"] == expected  # the trial's own model, served
        assert len(set(expected)) > 1  # a model that learned something, not one constant label
    finally:
        server.stop()
