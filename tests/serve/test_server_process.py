"""A real ``frugalml serve`` process on loopback: predictions, metrics, refusals, auth, feedback."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import numpy as np
import pytest

from serve_helpers import ADMIN_TOKEN, as_rows, scrape, scrape_until, value

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_predictions_equal_the_models_own(server, diabetes, model):
    _, split = diabetes
    X = split.X_test[:60]
    expected = model.predict(X).tolist()
    by_rows = server.client.post("/predict", json={"rows": as_rows(X, split.feature_names)})
    by_instances = server.client.post("/predict", json={"instances": X.tolist()})
    for response in (by_rows, by_instances):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["predictions"] == expected
        assert len(set(body["ids"])) == len(X)
    health = server.client.get("/health").json()
    assert health["model"]["features"] == list(split.feature_names)


def test_the_serving_line_comes_once_the_socket_listens(server):
    assert server.health_when_announced == 200  # it came before uvicorn bound the port: ConnectError


def test_metrics_parse_with_the_prometheus_parser(server, diabetes):
    _, split = diabetes
    server.client.post("/predict", json={"instances": split.X_test[:5].tolist()})
    # predictions are counted by the monitor's thread (every 0.1 s here), not on the request path
    samples = scrape_until(server.client, lambda s: value(s, "frugalml_predicted_class_total") >= 5)
    assert value(samples, "frugalml_requests_total", endpoint="/predict", code="200") >= 1
    assert value(samples, "frugalml_request_duration_seconds_count", endpoint="/predict") >= 1
    assert value(samples, "frugalml_requests_in_flight") >= 0
    assert 2**20 < value(samples, "frugalml_process_memory_bytes") < 4096 * 2**20
    assert "frugalml_process_cpu_percent" in samples
    assert value(samples, "frugalml_predicted_class_total") >= 5
    assert value(samples, "frugalml_model_nonfinite_weights") == 0
    assert {s.labels["where"] for s in samples["frugalml_nonfinite_values_total"]} == {"input", "output"}
    assert value(samples, "frugalml_model_info") == 1


def test_promtool_finds_nothing_to_lint_in_metrics(server, diabetes):
    """The real ``promtool check metrics`` (Debian's prometheus package, installed by the Makefile)."""
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: `make system-deps` installs the prometheus package"
    _, split = diabetes
    server.client.post("/predict", json={"instances": split.X_test[:5].tolist()})
    text = scrape_until(server.client, lambda s: value(s, "frugalml_predicted_class_total") >= 5) and \
        server.client.get("/metrics").text
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), \
        checked.stdout + checked.stderr


MALFORMED = [
    ("wrong names", {"rows": [{"preg": 1, "glucose": 2}]}, 422, "wrong_features"),
    ("wrong count", {"instances": [[1, 2, 3]]}, 422, "wrong_count"),
    ("a string", {"instances": [[1, 85, 66, 29, 0, "26.6", 0.35, 31]]}, 422, "wrong_type"),
    ("a boolean", {"instances": [[1, 85, 66, 29, 0, True, 0.35, 31]]}, 422, "wrong_type"),
    ("null", {"rows": [{"preg": 1, "plas": None, "pres": 1, "skin": 1, "insu": 1, "mass": 1, "pedi": 1, "age": 1}]},
     422, "wrong_type"),
    ("no rows key", {"data": [[1]]}, 422, "bad_request"),
    ("empty rows", {"rows": []}, 422, "bad_request"),
    ("too many rows", {"instances": [[1.0] * 8] * 1001}, 413, "too_many_rows"),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_requests_get_a_one_line_4xx(server, case):
    _, body, status, kind = case
    response = server.client.post("/predict", json=body)
    assert response.status_code == status, response.text
    assert response.json()["kind"] == kind
    assert "\n" not in response.json()["error"]


def test_raw_malformed_bodies_nan_and_oversize_then_the_server_keeps_serving(server, diabetes):
    _, split = diabetes
    before = scrape(server.client)
    nan = '{"instances": [[1, 85, 66, NaN, 0, 26.6, 0.35, 31]]}'
    inf = '{"instances": [[1, 85, 66, 1e999, 0, 26.6, 0.35, 31]]}'
    oversize = json.dumps({"instances": [[1.5] * 8] * 3000})  # ~100 KB > 64 KiB
    deep = "[" * 10000 + "]" * 10000  # json.loads recurses
    huge_int = '{"instances": [[' + "9" * 5000 + ', 85, 66, 29, 0, 26.6, 0.35, 31]]}'  # over Python's 4300 digits
    overflow = json.dumps({"instances": [[1e308] * 8]})  # finite, but the scaler overflows
    surrogate = '{"rows": [{"\\ud800": 1}]}'  # a lone surrogate as a feature name
    cases = [("{bad json", 400, "bad_json"), (nan, 422, "nonfinite"), (inf, 422, "nonfinite"),
             (oversize, 413, "too_large"), (b"\xff\xfe", 400, "bad_json"), (deep, 400, "bad_json"),
             (huge_int, 400, "bad_json"), (overflow, 422, "nonfinite"), (surrogate, 422, "wrong_features")]
    for body, status, kind in cases:
        response = server.client.post("/predict", content=body, headers={"Content-Type": "application/json"})
        assert (response.status_code, response.json()["kind"]) == (status, kind), response.text
    assert server.client.get("/nowhere").status_code == 404
    assert server.client.head("/health").status_code == 200
    assert server.client.get("/predict").status_code == 405
    after = scrape(server.client)
    for kind in ("bad_json", "nonfinite", "too_large"):
        assert value(after, "frugalml_errors_total", kind=kind) > value(before, "frugalml_errors_total", kind=kind)
    assert value(after, "frugalml_nonfinite_values_total", where="input", kind="nan") >= 1
    assert value(after, "frugalml_nonfinite_values_total", where="input", kind="inf") >= 1
    ok = server.client.post("/predict", json={"instances": split.X_test[:3].tolist()})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 3


def test_a_body_that_never_arrives_gets_408_and_a_client_that_hangs_up_is_counted(server, diabetes):
    _, split = diabetes
    head = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n") + b'{"instances": '  # 14 of the 100 bytes promised
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as slow:
        slow.sendall(head)
        started = time.monotonic()
        reply = b""
        while chunk := slow.recv(4096):  # the server answers, then closes the connection
            reply += chunk
        waited = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408") and b'"kind":"body_timeout"' in reply, reply
    assert b"connection: close" in reply.lower()
    assert 1.5 < waited < 5  # --body-timeout 2, then the server closes (not after uvicorn's 5 s keep-alive)
    hung_up = lambda m: value(m, "frugalml_errors_total", kind="client_disconnected")  # noqa: E731
    before = hung_up(scrape(server.client))
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as gone:
        gone.sendall(head)
    assert hung_up(scrape_until(server.client, lambda m: hung_up(m) > before)) > before
    ok = server.client.post("/predict", json={"instances": split.X_test[:2].tolist()})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 2


def test_nonfinite_inputs_can_be_imputed_with_the_training_mean(server, model):
    config = server.client.get("/admin/monitoring-config", headers=ADMIN).json()
    row = [1.0, 85.0, 66.0, float("nan"), 0.0, 26.6, 0.35, 31.0]
    body = '{"instances": [[1, 85, 66, NaN, 0, 26.6, 0.35, 31]]}'
    try:
        assert server.client.put("/admin/monitoring-config", json={**config, "nonfinite": "impute"},
                                 headers=ADMIN).status_code == 200
        response = server.client.post("/predict", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.text
        reference = json.loads((server.model_dir / "extra_files" / "frugalml_reference.json").read_text())
        row[3] = reference["features"][3]["mean"]
        assert response.json()["predictions"] == model.predict(np.array([row])).tolist()
    finally:
        server.client.put("/admin/monitoring-config", json=config, headers=ADMIN)
    assert server.client.post("/predict", content=body, headers={"Content-Type": "application/json"}).status_code == 422


def test_admin_endpoints_need_the_token(server):
    assert server.client.post("/admin/reload").status_code == 401
    wrong = server.client.post("/admin/reload", headers={"Authorization": "Bearer wrong-token-123"})
    assert wrong.status_code == 401 and wrong.json()["kind"] == "unauthorized"
    assert server.client.put("/admin/monitoring-config", json={"window_rows": 10}).status_code == 401
    assert server.client.get("/admin/monitoring-config").status_code == 401
    config = server.client.get("/admin/monitoring-config", headers=ADMIN).json()
    assert config["window_rows"] == 150 and config["custom_metrics"] == {"mean_glucose": "serve_helpers:mean_glucose"}
    bad = server.client.put("/admin/monitoring-config", json={"window_rows": 0}, headers=ADMIN)
    assert bad.status_code == 422 and "window_rows" in bad.json()["error"]
    unknown = server.client.put("/admin/monitoring-config", json={"windw_rows": 5}, headers=ADMIN)
    assert unknown.status_code == 422 and "windw_rows" in unknown.json()["error"]
    sneaky = server.client.put("/admin/monitoring-config", json={"custom_metrics": {"x": "os:getcwd"}}, headers=ADMIN)
    assert sneaky.status_code == 422
    for uri in ("http://127.0.0.1:1/x", "nope:/x"):  # MLflow raises assorted errors for these
        refused = server.client.post("/admin/reload", json={"model_uri": uri}, headers=ADMIN)
        assert (refused.status_code, refused.json()["kind"]) == (422, "model_load"), refused.text
    reload = server.client.post("/admin/reload", headers=ADMIN)
    assert reload.status_code == 200, reload.text
    assert server.client.get("/health").status_code == 200


def test_feedback_gives_accuracy_per_window_and_slice(server, diabetes, model):
    _, split = diabetes
    X, y = split.X_test[:40], np.asarray(model.steps[-1][1].classes_)[split.y_test[:40]]
    body = server.client.post("/predict", json={"instances": X.tolist()}).json()
    feedback = [{"prediction_id": i, "label": str(label), "slice": {"age_band": "old" if row[7] >= 40 else "young"}}
                for i, label, row in zip(body["ids"], y, X)]
    response = server.client.post("/feedback", json=feedback)
    assert response.status_code == 200 and response.json() == {"accepted": 40}
    expected = float(np.mean(np.asarray(body["predictions"]) == y))
    samples = scrape_until(server.client, lambda s: len(s.get("frugalml_quality", [])) >= 3)  # the monitor's thread ticks every 0.1 s
    assert value(samples, "frugalml_quality", metric="accuracy", slice="all") == pytest.approx(expected)
    slices = {s.labels["slice"] for s in samples["frugalml_quality"]}
    assert {"age_band=old", "age_band=young"} <= slices
    assert value(samples, "frugalml_feedback_total") >= 40
    unknown = server.client.post("/feedback", json={"prediction_id": "nope-1", "label": "tested_negative"})
    assert unknown.status_code == 422 and unknown.json()["kind"] == "bad_feedback"
    fresh = server.client.post("/predict", json={"instances": X[:2].tolist()}).json()["ids"]  # not labelled yet
    bad_label = server.client.post("/feedback", json={"prediction_id": fresh[0], "label": "maybe"})
    assert bad_label.status_code == 422 and "classes" in bad_label.json()["error"]
    prefix = body["ids"][0].rpartition("-")[0]
    for odd in (f"{prefix}-\u00b2", f"{prefix}-\u0661\u0662", f"{prefix}-" + "9" * 5000):  # not ASCII digits, too long
        response = server.client.post("/feedback", json={"prediction_id": odd, "label": "tested_negative"})
        assert (response.status_code, response.json()["kind"]) == (422, "bad_feedback"), response.text
    total = value(scrape(server.client), "frugalml_feedback_total")
    again = server.client.post("/feedback", json={"prediction_id": body["ids"][0], "label": str(y[0])})
    assert (again.status_code, again.json()["kind"]) == (409, "duplicate_feedback"), again.text  # counted once
    twice = [{"prediction_id": fresh[0], "label": str(y[0])}, {"prediction_id": fresh[0], "label": str(y[0])}]
    assert server.client.post("/feedback", json=twice).json()["kind"] == "duplicate_feedback"
    half_bad = [{"prediction_id": fresh[0], "label": str(y[0])},
                {"prediction_id": fresh[1], "label": str(y[1]), "slice": "not an object"}]
    response = server.client.post("/feedback", json=half_bad)
    assert response.status_code == 422 and response.json()["error"].startswith("item 1:")
    assert value(scrape(server.client), "frugalml_feedback_total") == total  # all or nothing


def test_monitor_command_shows_the_live_state(server, diabetes, model_dir, capsys):
    from frugalml.cli import main

    _, split = diabetes
    windows = value(scrape(server.client), "frugalml_drift_windows_total")
    server.client.post("/predict", json={"instances": split.X_test[:150].tolist()})
    deadline = time.monotonic() + 10
    while value(scrape(server.client), "frugalml_drift_windows_total") <= windows and time.monotonic() < deadline:
        time.sleep(0.05)
    assert main(["monitor", server.url, "--once"]) == 0
    out = capsys.readouterr().out
    assert "predict latency" in out and "plas" in out and "mean_glucose" in out
    assert " 0 in flight" in out  # its own scrape is not counted (the server is idle)
    assert main(["monitor", model_dir.name, "--once"]) == 0  # found by name: the server noted its URL
    assert "drift vs training" in capsys.readouterr().out
    assert main(["monitor", "no-such-model", "--once"]) == 2
    assert "no running server" in capsys.readouterr().err


def test_monitor_into_a_pipe_prints_a_frame_each_interval(server):
    """Piped (a log, `| cat`), the live view printed nothing until it ended."""
    import subprocess
    import sys

    watcher = subprocess.Popen([sys.executable, "-m", "frugalml.cli", "monitor", server.url, "--interval", "0.3"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(watcher.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while sum("predict latency" in line for line in lines) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sum("predict latency" in line for line in lines) >= 2, "".join(lines)  # while it still runs
        assert watcher.poll() is None
    finally:
        watcher.kill()
        watcher.wait(10)
    head = subprocess.run(f"{sys.executable} -m frugalml.cli monitor {server.url} --interval 0.2 | head -n 3",
                          shell=True, capture_output=True, text=True, timeout=60)  # `| head`: ends, no traceback
    assert len(head.stdout.splitlines()) == 3 and "Traceback" not in head.stderr, head.stderr


def test_monitor_by_a_name_two_running_servers_share_is_one_line_naming_both(tmp_path, monkeypatch, capsys):
    """Two servers of models with the same name on one machine: ``monitor NAME`` names both, exit 2,
    rather than watching whichever started first (the notes are the ones ``frugalml serve`` writes;
    two live processes stand in for the servers, since only their pids are checked)."""
    from frugalml.cli import main

    monkeypatch.setenv("FRUGALML_CACHE_DIR", str(tmp_path))
    notes = tmp_path / "servers"  # where frugalml serve notes itself, in the frugalml cache
    notes.mkdir()
    for pid, port, uri in ((os.getpid(), 8001, "/a/model"), (os.getppid(), 8002, "/b/model")):
        (notes / f"{pid}.json").write_text(json.dumps(
            {"pid": pid, "url": f"http://127.0.0.1:{port}", "model_uri": uri, "name": "model", "version": None}))
    assert main(["monitor", "model", "--once"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 running servers match 'model'" in err, err
    assert "http://127.0.0.1:8001" in err and "http://127.0.0.1:8002" in err


def test_a_flavour_that_configures_logging_on_import_does_not_silence_the_servers_warnings():
    """MLflow's PyTorch flavour calls ``logging.basicConfig(level=ERROR)`` when imported, which left
    the server of a torch model printing no warning (a worker that died, a server open to anyone):
    the server configures logging before it loads a model, and a worker (whose forkserver imported
    the flavour) forces its own configuration."""
    import subprocess
    import sys

    first = ("from frugalml.serve._server import configure_logging; configure_logging('warning'); "
             "import logging, mlflow.pytorch; logging.getLogger('frugalml.serve').warning('a worker exited')")
    forced = ("import logging, mlflow.pytorch; from frugalml.serve._server import configure_logging; "
              "assert logging.getLogger().level == logging.ERROR, 'MLflow no longer sets it: drop the test'; "
              "configure_logging('warning', force=True); "
              "logging.getLogger('frugalml.serve').warning('a worker exited')")
    for code in (first, forced):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "WARNING frugalml.serve: a worker exited" in result.stderr, result.stderr
