"""The clients people already use, unmodified and with their defaults, against a real server:
Triton's ``tritonclient.http`` (JSON and binary tensors), KServe's ``InferenceRESTClient`` and
MLflow's ``ScoringServerClient`` plus raw CSV (issue 25)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
KSERVE = "0.21.0"


@pytest.fixture
def rows(diabetes):
    _, split = diabetes
    return split.X_test[:25]


@pytest.fixture
def expected(server, rows):
    response = server.client.post("/predict", json={"instances": rows.tolist()})
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


@pytest.fixture
def triton(server):
    import tritonclient.http as triton_http

    client = triton_http.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield client
    client.close()


def _labels(array: np.ndarray) -> list:
    return [v.decode() if isinstance(v, bytes) else v for v in array.tolist()]


@pytest.mark.parametrize("binary", [True, False], ids=["binary-tensors", "json-tensors"])
def test_tritonclient_infers_with_its_defaults(server, triton, rows, expected, binary):
    import tritonclient.http as triton_http

    tensor = triton_http.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows, binary_data=binary)  # binary: the client's default
    result = triton.infer("model", [tensor], request_id="req-7")
    assert _labels(result.as_numpy("predictions")) == expected
    response = result.get_response()
    assert response["id"] == "req-7"
    assert len(response["parameters"]["prediction_ids"]) == len(rows)
    declared = triton.get_model_metadata("model")["outputs"][0]["datatype"]
    assert response["outputs"][0]["datatype"] == declared  # metadata says what infer returns


def test_tritonclient_per_feature_fp32_inputs_and_versioned_routes(server, triton, rows, expected):
    import tritonclient.http as triton_http

    names = server.client.get("/health").json()["model"]["features"]
    inputs = []
    for j, name in enumerate(names):
        tensor = triton_http.InferInput(name, [len(rows)], "FP32")
        tensor.set_data_from_numpy(rows[:, j].astype(np.float32))
        inputs.append(tensor)
    json_output = triton_http.InferRequestedOutput("predictions", binary_data=False)
    result = triton.infer("model", inputs, model_version="1", outputs=[json_output])
    assert _labels(result.as_numpy("predictions")) == expected
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("model", "1") and not triton.is_model_ready("model", "2")
    assert triton.get_model_metadata("model", "1")["versions"] == ["1"]
    metadata = triton.get_server_metadata()
    assert metadata["name"] == "frugalml" and "binary_tensor_data" in metadata["extensions"]
    with pytest.raises(Exception, match=r"\[422\] the input tensor must have shape \[rows, 8\]"):
        wrong = triton_http.InferInput("input-0", [2, 3], "FP64")
        wrong.set_data_from_numpy(np.zeros((2, 3)))
        triton.infer("model", [wrong])


@pytest.fixture(scope="session")
def kserve_python() -> Path:
    """The interpreter of a virtual environment with kserve installed (built once per machine:
    ~50 s; kserve 0.21 pins pandas<3 and psutil<6, which frugalml's environment does not)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "frugalml-tests"
    venv = cache / f"kserve-{KSERVE}"
    python = venv / "bin" / "python"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "kserve.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build, however many test sessions start at once
        if not python.exists():
            building = Path(tempfile.mkdtemp(prefix="kserve-", dir=cache))
            subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)
            try:
                subprocess.run([str(building / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile",
                                f"kserve=={KSERVE}"], check=True, timeout=900, capture_output=True, text=True)
                # bytecode for what the client imports only (pip compiles every module of every dependency: 44
                # CPU-s against 27 without; this import then writes the ~1/3 that the client needs, in ~3 s)
                subprocess.run([str(building / "bin" / "python"), "-c", "import kserve"], check=True, timeout=300,
                               env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:  # the machine, not frugalml
                shutil.rmtree(building, ignore_errors=True)
                pytest.skip(f"cannot install kserve=={KSERVE} here: {str(error.stderr or error)[-300:]}")
            building.rename(venv)
    return python


@pytest.mark.parametrize("binary", [True, False], ids=["binary-tensors", "json-tensors"])
def test_kserve_rest_client_infers(server, rows, expected, binary, kserve_python):
    answer = subprocess.run([str(kserve_python), str(HERE / "kserve_client.py"), server.url,
                             "binary" if binary else "json"], input=json.dumps(rows.tolist()),
                            capture_output=True, text=True, timeout=120)
    assert answer.returncode == 0, answer.stderr[-2000:]
    response = json.loads(answer.stdout)
    assert response["id"] == "k-1"
    assert response["labels"] == expected
    assert response["datatype"] == server.client.get("/v2/models/model").json()["outputs"][0]["datatype"]


def test_mlflow_scoring_client_and_csv(server, rows, expected):
    import pandas as pd
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    names = server.client.get("/health").json()["model"]["features"]
    client = ScoringServerClient("127.0.0.1", server.port)
    client.wait_server_ready(timeout=10)  # GET /ping
    assert client.get_version() == __import__("mlflow").__version__
    frame = pd.DataFrame(rows, columns=names)
    assert client.invoke(frame).get_predictions(predictions_format="ndarray").tolist() == expected
    csv = frame[names[::-1]].to_csv(index=False)  # columns in any order, as MLflow reads them
    response = server.client.post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected}
    refused = server.client.post("/invocations", content="preg\n1\n", headers={"Content-Type": "text/csv"})
    assert refused.status_code == 422 and refused.json()["kind"] == "wrong_features"
    assert server.client.post("/invocations", content=csv, headers={"Content-Type": "text/plain"}).status_code == 415
