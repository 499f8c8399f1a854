"""The OpenAPI schema, and Schemathesis fuzzing the live server from it (bounded): no 5xx."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from serve_helpers import ADMIN_TOKEN, ServerProcess


def test_the_schema_describes_every_route_with_its_body(server):
    response = server.client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/predict", "/invocations", "/feedback", "/v2/models/{name}/infer", "/health", "/metrics", "/v2/models/{name}/versions/{version}/infer"):
        assert path in paths, path
    predict = paths["/predict"]["post"]
    assert predict["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert {"200", "415", "422"} <= set(predict["responses"])


def test_the_schema_passes_openapi_spec_validator(server):
    """What a client generator checks first: a valid OpenAPI document, one operationId per operation."""
    from openapi_spec_validator import validate

    spec = server.client.get("/openapi.json").json()
    validate(spec)
    ids = [op["operationId"] for path in spec["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for path in ("/v2", "/v2/models/{name}/versions/{version}/infer", "/ping", "/version"):
        assert path in spec["paths"], path
    assert server.client.head("/health").status_code == 200  # HEAD still answers, out of the schema


def test_schemathesis_finds_no_server_error(model_dir, tmp_path):
    """Every operation, fuzzed from the schema with and without the admin token, answers < 500.

    A server of its own: with the token the fuzzer rewrites the monitoring config and
    reloads the model, which the session's shared server must not see.
    """
    binary = shutil.which("schemathesis") or os.path.join(os.path.dirname(os.sys.executable), "schemathesis")
    server = ServerProcess(str(model_dir), "--token", ADMIN_TOKEN, log=tmp_path / "server.log").wait_ready()
    try:
        _fuzz(binary, server, tmp_path)
    finally:
        server.stop()


def _fuzz(binary: str, server, tmp_path) -> None:
    for headers in ([], ["-H", f"Authorization: Bearer {ADMIN_TOKEN}"]):
        result = subprocess.run(
            [binary, "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error", "--max-examples", "25",
             "--seed", "1", "--request-timeout", "10", "--phases", "examples,coverage,fuzzing", *headers],
            capture_output=True, text=True, timeout=400, cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"})
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        generated = re.search(r"(\d+) generated", result.stdout)
        assert generated and int(generated.group(1)) >= 200, result.stdout[-2000:]  # it really fuzzed
    assert server.client.get("/health").status_code == 200
