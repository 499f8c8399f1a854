"""MLflow's own scoring server and ``frugalml serve`` on the same model answer the same (issue 25).

One small real scikit-learn model (scaler + logistic regression on diabetes, saved with
``mlflow.sklearn.save_model``; its signature, from an input example, has integer and float
columns) is served by ``mlflow models serve --env-manager local`` and by ``frugalml serve``,
both real processes on free loopback ports. Every body goes to both ``/invocations``: the four
JSON formats, CSV, the conversions MLflow makes to the signature's types, and bad bodies. The
status classes (2xx/4xx/5xx) are equal and so are the predictions. Where they deliberately
differ (``DIFFERENCES``, documented in docs/serving.md), each side's answer is asserted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from frugalml.serve._model import pip_requirements  # pinned: MLflow would infer them in a subprocess (seconds)
from serve_helpers import ServerProcess, free_port

JSON = "application/json"
CSV = "text/csv"


DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # as tests/conftest.py sets FRUGALML_DATA_DIR


def _frame() -> pd.DataFrame:
    return pd.read_csv(DATA / "diabetes.csv.gz")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = _frame().iloc[:600]
    X, y = frame.drop(columns="target"), frame["target"]
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    path = tmp_path_factory.mktemp("conformance") / "model"
    mlflow.sklearn.save_model(model, str(path), serialization_format="cloudpickle", input_example=X.head(3),
                              pip_requirements=pip_requirements())
    return path


class MlflowServer:
    """``mlflow models serve --env-manager local`` in its own process group (it starts uvicorn as a child)."""

    def __init__(self, model_dir: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        bin_dir = os.path.dirname(sys.executable)  # MLflow runs `uvicorn` from PATH
        env = {**os.environ, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
               "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
        self.log_path = log
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir), "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(self.port), "--workers", "1"],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.client = httpx.Client(base_url=self.url, timeout=30, trust_env=False)

    def wait_ready(self, timeout: float = 90) -> MlflowServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited with {self.process.returncode}:\n"
                                   f"{self.log_path.read_text()}")
            try:
                if self.client.get("/ping").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"mlflow models serve not ready after {timeout} s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        self.client.close()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)  # the group this test started: mlflow and its uvicorn
            try:
                self.process.wait(timeout=15)
                break
            except subprocess.TimeoutExpired:
                pass
        self._log.close()


@pytest.fixture(scope="module")
def servers(model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("conformance-logs")
    mlflow_server = MlflowServer(model_dir, folder / "mlflow.log")  # both start at once
    try:
        frugal = ServerProcess(str(model_dir), log=folder / "frugalml.log")
        try:
            yield mlflow_server.wait_ready(), frugal.wait_ready()
        finally:
            frugal.stop()
    finally:
        mlflow_server.stop()


ROWS = _frame().iloc[600:640].drop(columns="target")  # held out from the fit
NAMES = list(ROWS.columns)
RECORDS = ROWS.to_dict(orient="records")
ONE = RECORDS[0]


def _json(value: object) -> tuple[bytes, str]:
    return json.dumps(value).encode(), JSON


def _csv(frame: pd.DataFrame) -> tuple[bytes, str]:
    return frame.to_csv(index=False).encode(), CSV


def _records(**changed: object) -> tuple[bytes, str]:
    return _json({"dataframe_records": [{**ONE, **changed}, *RECORDS[1:5]]})


# Bodies both servers answer alike: name -> (body, Content-Type).
SAME = {
    # the four JSON formats and CSV
    "dataframe_split": _json({"dataframe_split": {"columns": NAMES, "data": ROWS.to_numpy().tolist()}}),
    "dataframe_split, columns reordered": _json({"dataframe_split": {"columns": NAMES[::-1],
                                                                     "data": ROWS[NAMES[::-1]].to_numpy().tolist()}}),
    "dataframe_records": _json({"dataframe_records": RECORDS}),
    "instances (objects)": _json({"instances": RECORDS}),
    "inputs (columns)": _json({"inputs": ROWS.to_dict(orient="list")}),
    "csv": _csv(ROWS),
    "csv, columns reordered": _csv(ROWS[NAMES[::-1]]),
    "json with charset": (_json({"dataframe_records": RECORDS})[0], "application/json; charset=utf-8"),
    # what MLflow converts to the signature's types, and columns it ignores
    "extra column (records)": _json({"dataframe_records": [{**r, "note": 1} for r in RECORDS]}),
    "extra column (split)": _json({"dataframe_split": {"columns": [*NAMES, "note"],
                                                       "data": [[*r, "x"] for r in ROWS.to_numpy().tolist()]}}),
    "extra column (csv)": _csv(ROWS.assign(note="x")),
    "fraction in an integer column": _records(preg=1.7, age=-0.5),
    "integer column as text": _records(preg="3"),
    "float column as text": _records(mass="39.5"),
    "boolean in a number column": _records(preg=True, mass=False),
    "csv: 1.0 in an integer column": _csv(ROWS.head(3).assign(preg=1.0)),
    "csv: true in a number column": _csv(ROWS.head(3).assign(mass="true")),
    # bad bodies: 4xx from both
    "missing column (split)": _json({"dataframe_split": {"columns": NAMES[:-1],
                                                         "data": ROWS.iloc[:, :-1].to_numpy().tolist()}}),
    "missing column (records)": _json({"dataframe_records": [{k: v for k, v in r.items() if k != "age"}
                                                             for r in RECORDS]}),
    "missing column (csv)": _csv(ROWS.drop(columns="age")),
    "wrong type: text in a number column": _records(plas="high"),
    "wrong type: null": _records(mass=None),
    "wrong type: a list": _records(preg=[1]),
    "wrong type: text in csv": _csv(ROWS.head(3).assign(plas="high")),
    "wrong type: fraction in an integer csv column": _csv(ROWS.head(3).assign(preg=1.5)),
    "wrong type: fractional text in an integer column": _records(preg="1.5"),
    "integer out of range": _records(preg=2**64),
    "NaN": _records(mass=float("nan")),
    "malformed JSON": (b'{"dataframe_split": {"columns": [', JSON),
    "empty body": (b"", JSON),
    "empty csv body": (b"", CSV),
    "csv header only": (b"preg,plas\n", CSV),
    "unknown format key": _json({"data": ROWS.to_numpy().tolist()}),
    "two format keys": _json({"instances": RECORDS, "dataframe_records": RECORDS}),
    "not an object": _json([1, 2, 3]),
    "no rows": _json({"dataframe_records": []}),
    "split rows shorter than columns": _json({"dataframe_split": {"columns": NAMES, "data": [[1, 2]]}}),
    # the signature names its columns: positional rows are refused by both
    "instances (lists)": _json({"instances": ROWS.to_numpy().tolist()}),
    "inputs (lists)": _json({"inputs": ROWS.to_numpy().tolist()}),
    "dataframe_split without columns": _json({"dataframe_split": {"data": ROWS.to_numpy().tolist()}}),
    "wrong media type": (_json({"dataframe_records": RECORDS})[0], "text/plain"),
}

# Deliberate differences: name -> (body, Content-Type, MLflow's status class, frugalml's status).
DIFFERENCES = {
    # MLflow fails on a body without Content-Type with 500; frugalml answers no bad input with a 5xx.
    "no Content-Type": (_json({"dataframe_records": RECORDS})[0], None, 5, 415),
    # MLflow casts 1e300 to int64 (a wrapped-around value) and predicts on it; frugalml refuses it.
    "float beyond int64 in an integer column": (*_records(preg=1e300), 2, 422),
}


def _post(server, body: bytes, content_type: str | None) -> httpx.Response:
    """A request on a connection of its own: uvicorn closes one after an unhandled 500 (MLflow's)."""
    return httpx.post(f"{server.url}/invocations", content=body, timeout=30, trust_env=False,
                      headers={"Content-Type": content_type} if content_type else {})


def _refusal_is_one_line(response: httpx.Response) -> None:
    error = response.json()
    assert set(error) == {"error", "kind"} and "\n" not in error["error"], error


@pytest.mark.parametrize("case", list(SAME))
def test_same_status_class_and_predictions(servers, case):
    mlflow_server, frugal = servers
    body, content_type = SAME[case]
    theirs, ours = _post(mlflow_server, body, content_type), _post(frugal, body, content_type)
    assert theirs.status_code // 100 == ours.status_code // 100, (case, theirs.text[:300], ours.text[:300])
    assert ours.status_code < 500
    if theirs.status_code == 200:
        expected, got = theirs.json()["predictions"], ours.json()["predictions"]
        assert len(got) == len(expected) > 0
        if all(isinstance(v, (int, float)) for v in expected):
            np.testing.assert_allclose(got, expected, rtol=1e-12)
        else:
            assert got == expected
        assert ours.json() == {"predictions": got}
    else:
        _refusal_is_one_line(ours)


@pytest.mark.parametrize("case", list(DIFFERENCES))
def test_deliberate_differences(servers, case):
    mlflow_server, frugal = servers
    body, content_type, mlflow_class, frugal_status = DIFFERENCES[case]
    assert _post(mlflow_server, body, content_type).status_code // 100 == mlflow_class
    ours = _post(frugal, body, content_type)
    assert ours.status_code == frugal_status
    _refusal_is_one_line(ours)


def test_ping_and_version_agree(servers):
    mlflow_server, frugal = servers
    for path in ("/ping", "/version"):
        theirs, ours = mlflow_server.client.get(path), frugal.client.get(path)
        assert theirs.status_code == ours.status_code == 200, path
    assert ours.text == theirs.text  # the MLflow version


def test_an_integer_column_truncates_a_fraction_as_mlflow_does(servers, model_dir):
    """A fraction sent for an integer column (``plas`` is ``long`` in the signature) is truncated
    toward zero by MLflow (pandas' ``astype``): a value just past the model's decision boundary is
    predicted as the integer below it, by both servers."""
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(str(model_dir))
    for row in RECORDS:  # a row whose plas boundary (decision 0) lies between two integers
        d0, d1 = model.decision_function(pd.DataFrame([{**row, "plas": 0}, {**row, "plas": 1}]))
        boundary = -d0 / (d1 - d0)
        if 40 < boundary < 199 and 0.1 < boundary % 1 < 0.8:
            break
    else:
        pytest.fail("no row of the held-out rows has its plas boundary inside the data's range")
    sent = {**row, "plas": float(boundary) + 0.1}
    exact, truncated = model.predict(pd.DataFrame([sent, {**sent, "plas": int(sent["plas"])}]))
    assert exact != truncated  # the check can tell the two apart
    body, content_type = _json({"dataframe_records": [sent]})
    for server in servers:
        response = _post(server, body, content_type)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == [truncated]
