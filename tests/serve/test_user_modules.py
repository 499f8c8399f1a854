"""A model pickled from the user's own module, registered and served by a process that cannot import it.

Through the real ``frugalml`` console script (whose ``sys.path`` holds neither the current folder
nor the tests): one line naming the module and the folder to put on ``PYTHONPATH``, exit 2; with
that folder importable (``python -m frugalml`` run from it) the same study registers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MODULE = '''
import os

import numpy as np
import pandas as pd


class Threshold:
    """Predicts 1 where plasma glucose is above a cut."""

    def __init__(self, cut):
        self.cut = cut

    def predict(self, X):
        return (np.asarray(X, dtype=float)[:, 1] > self.cut).astype(int)


def train(trial):
    frame = pd.read_csv(os.path.join(os.environ["FRUGALML_DATA_DIR"], "diabetes.csv.gz"))
    X, y = frame.drop(columns="target"), (frame["target"] == "tested_positive").astype(int).to_numpy()
    model = Threshold(trial.params["cut"])
    trial.plan(1)
    trial.step(0.0, n_samples=len(X))
    trial.report(val_loss=float(np.mean(model.predict(X) != y)))
    trial.log_model(model)
    trial.log_reference(X, y)
'''

STUDY = '''
[study]
name = "usermod"
workers = 1
directory = "{directory}"

[[workloads]]
train = "mymodels:train"
name = "cut"
eval_every = 1

[search]
space = {{ cut = [130.0] }}

[tracking]
mlflow_uri = "{mlflow}"
'''


def _run(*args: str, cwd: Path, pythonpath: str | None, module: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    command = [sys.executable, "-m", "frugalml"] if module else [str(Path(sys.executable).parent / "frugalml")]
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _one_line_error(result: subprocess.CompletedProcess, folder: Path) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("frugalml: error: "), result.stderr
    assert "'mymodels'" in lines[0] and f"PYTHONPATH={folder}" in lines[0], lines[0]
    return lines[0]


def test_a_model_from_a_module_not_on_the_path_is_one_line_from_register_and_serve(tmp_path):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "mymodels.py").write_text(MODULE)
    for mlflow in ("none", "default"):  # the trial's kept pickle / the model its MLflow run holds
        study = tmp_path / f"study-{mlflow}"
        (project / f"{mlflow}.toml").write_text(STUDY.format(directory=study, mlflow=mlflow))
        tuned = _run("tune", str(project / f"{mlflow}.toml"), cwd=elsewhere, pythonpath=str(project))
        assert tuned.returncode == 0, tuned.stderr

        message = _one_line_error(_run("register", str(study), cwd=elsewhere, pythonpath=None), project)
        assert "Traceback" not in message
        registered = _run("register", str(study), "--alias", "champion", cwd=project, pythonpath=None, module=True)
        assert registered.returncode == 0, registered.stderr

    served = _run("serve", "models:/usermod-cut@champion", "--study", str(study), "--port", "0", cwd=elsewhere,
                  pythonpath=None)
    _one_line_error(served, project)
