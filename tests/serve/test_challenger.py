"""A challenger on live traffic: ``frugalml serve models:/NAME@champion --challenger models:/NAME@challenger``
in shadow (``--mirror``) and canary (``--canary P``), ``GET /challenger`` and ``frugalml check --live``.

Real studies tuned and registered into a real MLflow registry, real server processes. The challenger is
the champion's SGD slowed by 4 ms of CPU a predict call and answering the other label on the ~10% of
diabetes rows whose glucose is a multiple of 10 (``challenger_trainers.Challenger``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from challenger_trainers import Raises
from serve_helpers import ServerProcess, scrape, value

from frugalml import Search, Study, Workload, tune
from helpers import cli, importable

HERE = Path(__file__).resolve().parent
SLOW_S = 0.004  # the challenger's extra CPU per predict call
RATE = 40.0  # requests a second, paced: the challenger's process uses ~16% of a core, the champion's far less


def _study(folder: Path, name: str, challenger: bool) -> Study:
    study = Study(name=name, workloads=[Workload(train="challenger_trainers:sgd", eval_every=4, name="w")],
                  search=Search(objectives=["accuracy"], space={"predict_s": [SLOW_S if challenger else 0.0],
                                                                "challenger": [challenger]}),
                  # no trial runs in MLflow: register exports the kept model itself (test_trial_models.py
                  # registers one from its trial's run)
                  directory=str(folder / name), mlflow_uri=None)
    tune(study)
    return study


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory):
    """``served@champion`` (version 1) and ``served@challenger`` (version 2) in one registry."""
    from frugalml.registry import register

    with importable(HERE, HERE.parent):  # trial workers and servers unpickle the models
        folder = tmp_path_factory.mktemp("challenger")
        champion = register(_study(folder, "fast", False).directory, name="served", alias="champion")
        challenger = register(_study(folder, "slow", True).directory, name="served", alias="challenger",
                              tracking_uri=champion.tracking_uri)
        yield folder, champion, challenger


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return pd.read_csv(os.path.join(os.environ["FRUGALML_DATA_DIR"], "diabetes.csv.gz"))


def _start(folder: Path, tracking_uri: str, name: str, *args: str) -> ServerProcess:
    """The server process started, not yet waited for: two of them load their models side by side."""
    return ServerProcess("models:/served@champion", "--tracking-uri", tracking_uri, "--poll-registry", "0", *args,
                         log=folder / f"{name}.log")


def _serve(folder: Path, tracking_uri: str, name: str, *args: str) -> ServerProcess:
    return _start(folder, tracking_uri, name, *args).wait_ready(timeout=180)


def _paced(client: httpx.Client, rows: list[dict], count: int, start: int = 0) -> tuple[list[float], list]:
    """``count`` single-row predictions at ``RATE`` a second; client-side latency (s) and the answers."""
    latencies, answers = [], []
    next_at = time.perf_counter()
    for i in range(count):
        next_at += 1.0 / RATE
        time.sleep(max(0.0, next_at - time.perf_counter()))
        began = time.perf_counter()
        response = client.post("/predict", json={"rows": [rows[(start + i) % len(rows)]]})
        latencies.append(time.perf_counter() - began)
        assert response.status_code == 200, response.text
        answers.append(response)
    return latencies, answers


def _main(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``frugalml ARGS`` in this process (the CLI's ``main``, as the console script runs it): exit status,
    stdout, stderr. For the one-line error paths and ``check --live``, which are not about a process of
    their own; one case below still runs ``frugalml serve`` as a subprocess."""
    from frugalml.cli import main

    earlier = capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    out, err = capsys.readouterr()
    sys.stdout.write(earlier.out)  # the test's own prints stay in its report
    sys.stderr.write(earlier.err)
    return code, out, err


def _comparison(server: ServerProcess, ready, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    report = server.client.get("/challenger").json()
    while not ready(report) and time.monotonic() < deadline:
        time.sleep(0.1)
        report = server.client.get("/challenger").json()
    return report


def test_shadow_compares_both_versions_without_slowing_clients_and_check_live_fails_it_on_latency(registered, table,
                                                                                                  capsys):
    folder, champion, challenger = registered
    rows = table.drop(columns="target").to_dict("records")
    plain = _start(folder, champion.tracking_uri, "plain")
    shadow = _start(folder, champion.tracking_uri, "shadow", "--challenger", "models:/served@challenger", "--mirror")
    try:
        plain.wait_ready(timeout=180)
        shadow.wait_ready(timeout=180)
        first = shadow.client.post("/predict", json={"rows": rows[:1]})
        assert first.headers["x-frugalml-role"] == "champion" and first.headers["x-frugalml-version"] == "1"
        assert first.json()["model_version"] == "1"
        # interleaved rounds on both servers, so the machine's other load falls on both alike
        without, with_shadow, answers = [], [], []
        for round_ in range(4):
            latencies, _ = _paced(plain.client, rows, 100, start=round_ * 100)
            without += latencies
            latencies, got = _paced(shadow.client, rows, 100, start=round_ * 100)
            with_shadow += latencies
            answers += got
        p99_without, p99_with = (float(np.quantile(x, 0.99)) * 1000 for x in (without, with_shadow))
        ratio = p99_with / p99_without
        print(f"\nclient p99 without shadow {p99_without:.2f} ms, with shadow {p99_with:.2f} ms: ratio {ratio:.3f} "
              f"(p50 {np.median(without) * 1000:.2f} / {np.median(with_shadow) * 1000:.2f} ms)")
        assert all(a.headers["x-frugalml-role"] == "champion" for a in answers)  # never the challenger's answer

        # labels for 200 of the predictions: each version's accuracy on the same labels
        ids = [a.json()["ids"][0] for a in answers[:200]]
        labels = [{"prediction_id": i, "label": table["target"][k % len(rows)]} for k, i in enumerate(ids)]
        assert shadow.client.post("/feedback", json=labels).json() == {"accepted": 200}

        report = _comparison(shadow, lambda r: r["compared"]["requests"] >= 401)
        print("comparison:", {k: report[k] for k in ("mode", "champion", "challenger", "compared")})
        compared = report["compared"]
        assert report["mode"] == "mirror" and compared["requests"] == 401 and compared["rows"] == 401
        assert 0.85 <= compared["agreement"] <= 0.95  # ~10% of the rows flipped
        latency = compared["predict_ms"]
        assert latency["challenger"]["p50"] >= SLOW_S * 1000 * 0.9 > latency["champion"]["p50"]
        assert report["champion"]["version"] == "1" and report["challenger"]["version"] == "2"
        assert report["challenger"]["errors_total"] == 0
        assert report["champion"]["quality"]["labels"] == report["challenger"]["quality"]["labels"] == 200
        gap = report["champion"]["quality"]["accuracy"] - report["challenger"]["quality"]["accuracy"]
        assert gap != 0.0 and abs(gap) < 0.2  # the flipped rows move its accuracy, by at most their share
        samples = scrape(shadow.client)
        assert value(samples, "frugalml_version_requests_total", version="1", role="champion", code="200") == 401
        assert value(samples, "frugalml_version_predict_duration_seconds_count", role="challenger", version="2") == 401
        assert value(samples, "frugalml_challenger_compared_rows_total") == 401
        # p99 of 400 requests is their 4th slowest: on a shared 2-core machine it moves 2x between runs; the
        # median is steady, and a challenger on the request path would move it by its 4 ms
        assert ratio < 3.0, f"shadow slowed the clients: p99 ratio {ratio:.2f}"
        assert np.median(with_shadow) < 1.3 * np.median(without) + 0.001, "shadow slowed the median client"

        # `frugalml check --live` in this process (its CLI's main): it reads GET /challenger over real HTTP
        code, out, err = _main(capsys, "check", "--live", shadow.url, "--min-agreement", "0.8", "--json",
                               str(folder / "live.json"))
        assert code == 1, out + err
        import json

        result = json.loads((folder / "live.json").read_text())
        failed = {m["metric"] for m in result["metrics"] if m["status"] == "regression"}
        assert "predict_p99_ms" in failed and "agreement" not in failed, result
        # a stricter agreement threshold fails it on agreement as well
        code, out, err = _main(capsys, "check", "--live", shadow.url, "--json", str(folder / "strict.json"))
        assert code == 1, out + err
        result = json.loads((folder / "strict.json").read_text())
        assert "agreement" in {m["metric"] for m in result["metrics"] if m["status"] == "regression"}
        # a server without a challenger: one line, exit 2
        code, out, err = _main(capsys, "check", "--live", plain.url)
        assert code == 2 and "serves no challenger" in err and len(err.splitlines()) == 1, err
    finally:
        plain.stop()
        shadow.stop()


def test_canary_answers_its_share_and_says_which_version_answered(registered, table):
    folder, champion, _ = registered
    rows = table.drop(columns="target").to_dict("records")
    server = _serve(folder, champion.tracking_uri, "canary", "--challenger", "models:/served@challenger",
                    "--canary", "0.3")
    try:
        roles = []
        for i in range(100):  # routing is an exact accumulator, not a coin: 30 of 100
            response = server.client.post("/predict", json={"rows": [rows[i]]})
            assert response.status_code == 200, response.text
            role, version = response.headers["x-frugalml-role"], response.headers["x-frugalml-version"]
            assert version == {"champion": "1", "challenger": "2"}[role] == response.json()["model_version"]
            roles.append(role)
        share = roles.count("challenger") / len(roles)
        print(f"\ncanary 0.3: the challenger answered {roles.count('challenger')} of {len(roles)} ({share:.1%})")
        assert 0.2 <= share <= 0.4
        report = server.client.get("/challenger").json()
        assert report["mode"] == "canary" and report["canary_share"] == 0.3
        assert report["challenger"]["requests_answered"] == roles.count("challenger")
        assert report["champion"]["requests_answered"] == roles.count("champion")
        v2 = server.client.post("/v2/models/served/infer", json={"inputs": [
            {"name": "input-0", "shape": [1, 8], "datatype": "FP64", "data": list(rows[0].values())}]})
        assert v2.status_code == 200 and "x-frugalml-role" in v2.headers
    finally:
        server.stop()


def test_a_challenger_that_fails_never_fails_a_client(registered, tmp_path, table):
    """A challenger whose every predict raises: clients get the champion's answers; errors are counted."""
    folder, champion, _ = registered
    from frugalml.serve import load_model, save_model

    served = load_model("models:/served@champion", champion.tracking_uri)
    broken = save_model(Raises(), served.reference, tmp_path / "broken")
    rows = table.drop(columns="target").to_dict("records")
    # one server a mode, both started at once (they load their models side by side)
    servers = [_start(folder, champion.tracking_uri, f"broken-{mode[0].strip('-')}", "--challenger", str(broken), *mode)
               for mode in (["--mirror"], ["--canary", "1"])]
    try:
        for server in servers:
            server.wait_ready(timeout=180)
            for i in range(20):
                response = server.client.post("/predict", json={"rows": [rows[i]]})
                assert response.status_code == 200 and response.headers["x-frugalml-role"] == "champion"
            report = _comparison(server, lambda r: r["challenger"]["errors_total"] >= 20)
            assert report["challenger"]["errors"] == {"model_error": 20}, report
            assert report["compared"]["requests"] == 0
    finally:
        for server in servers:
            server.stop()


def test_bad_challenger_arguments_are_one_line_before_the_server_starts(model_dir, tmp_path, capsys, monkeypatch):
    from sklearn.linear_model import LogisticRegression

    from frugalml.serve import Reference, save_model

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 3)), rng.integers(0, 2, 200)
    model = LogisticRegression().fit(X, y)
    reference = Reference.build(X, y, ["a", "b", "c"], task="classification", predictions=model.predict(X))
    other = save_model(model, reference, tmp_path / "other")
    cases = {
        ("--challenger", str(other), "--mirror"): "takes other inputs than the champion",
        ("--challenger", str(model_dir), "--canary", "1.5"): "--canary must be a share of requests in [0, 1]",
        ("--challenger", str(model_dir), "--canary", "-0.1"): "--canary must be a share of requests in [0, 1]",
        ("--challenger", str(model_dir), "--mirror", "--canary", "0.2"): "exclude each other",
        ("--mirror",): "needs a challenger",
        ("--canary", "0.2"): "needs a challenger",
        ("--challenger", str(model_dir), "--workers", "2"): "not supported with --workers",
    }
    # in this process (the CLI's main): a case that got as far as listening fails here at once instead of serving
    import frugalml.serve._server as server_module

    def listening(host: str, port: int) -> None:
        raise AssertionError(f"reached the port check ({host}:{port}): the server was about to start")

    monkeypatch.setattr(server_module, "_check_port", listening)
    for args, message in cases.items():
        code, _, err = _main(capsys, "serve", str(model_dir), *args, "--port", "1")
        assert code == 2, (args, err)
        assert message in err and len(err.strip().splitlines()) == 1, (args, err)
    # and one as the console runs it, a process of its own: still one line on stderr, exit 2
    done = cli("serve", str(model_dir), "--mirror", "--port", "1")
    assert done.returncode == 2, done.stderr
    assert "needs a challenger" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
