"""One budget from tuning to production: a study tuned under ``max_predict_ms`` registers its best with
that SLO; ``frugalml serve`` exposes it (``/health``, ``/metrics``), holds live traffic to it, and alerts
once when a slower version promoted by hand breaks it. Real studies, a real registry, real servers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from helpers import importable
from serve_helpers import PredictingClient, ServerProcess, WebhookReceiver, scrape, value

from frugalml import Search, Study, Workload, tune
from frugalml.deploy import SLO_TAG, Slo
from frugalml.serve import ServingMonitor, Notifier
from frugalml.serve._slo import LATENCY_METRIC, RULE_NAME, ServedSlo

GATE = Path(__file__).resolve().parents[1] / "gate"  # gate_trainers.served_sgd: predict burns `predict_s` of CPU
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# The champion predicts in ~0.1 ms, but under load its tuning p99 (100 back-to-back calls) is a preempted
# call: measured on this 2-core box 0.16-0.4 ms idle, 11-39 ms at load 7-9 (CPU hogs), 20-59 ms at load ~14.
# The limit sits 5x above the load-8 worst, 3.4x above the load-14 one. The version promoted by hand sleeps
# 2.5x the limit on every 20th call: any 100 calls in a row hold 5 slow ones, so the p99 (the slowest 1-2) is
# one of them whatever the load (a sleep is never shorter); a p90 would pass it. Not longer: registering it
# times 221 calls (11 sleeps), and the check below 61.
LIMIT_MS = 200.0
QUANTILE = 0.99
TAIL_S, EVERY = 0.5, 20
# the slow version's module, written where the trial workers and the servers import it
SLOW_TAIL = '''
import time


class SlowTail:
    """A trained model that sleeps ``tail_s`` on every ``every``-th predict call: a slow tail."""

    def __init__(self, model, tail_s, every):
        self.model, self.tail_s, self.every, self.calls = model, tail_s, every, 0

    def predict(self, X):
        self.calls += 1
        if self.calls % self.every == 0:
            time.sleep(self.tail_s)
        return self.model.predict(X)


def served_sgd(trial):
    from trainers import diabetes_sgd  # the tests' helpers: on the trial workers' path, not the servers'

    model, X, y = diabetes_sgd(trial)
    trial.log_model(SlowTail(model, trial.params["tail_s"], trial.params["every"]), input_example=X.to_numpy()[:3])
    trial.log_reference(X, y)
'''
MONITORING = """
interval_s = 0.1
slo_window_s = 15
webhooks = ["{url}"]
"""
ROW = {"preg": 2.0, "plas": 120.0, "pres": 70.0, "skin": 20.0, "insu": 80.0, "mass": 32.0, "pedi": 0.4, "age": 33.0}


def _study(folder: Path, name: str, train: str, space: dict, budget: dict) -> Study:
    study = Study(name=name, workloads=[Workload(train=train, eval_every=4, name="w")],
                  search=Search(objectives=["accuracy"], space=space), budget=budget,
                  deploy={"calls": 100, "quantile": QUANTILE} if budget else {}, directory=str(folder / name),
                  mlflow_uri=None)  # no trial runs in MLflow: register exports the kept model itself
    tune(study)
    return study


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory):
    """``served@champion``: the best of a study tuned under max_predict_ms = 200 (p99), and version 2 of
    the same model, 0.5 s on every 20th call, from a study with no serving budget (so no SLO of its own)."""
    from frugalml.registry import register

    folder = tmp_path_factory.mktemp("slo")
    (folder / "slow_tail.py").write_text(SLOW_TAIL)
    with importable(GATE, folder):  # trial workers and servers unpickle the models
        fast = _study(folder, "fast", "gate_trainers:served_sgd", {"predict_s": [0.0]}, {"max_predict_ms": LIMIT_MS})
        champion = register(fast.directory, name="served", alias="champion")
        slow = _study(folder, "slow", "slow_tail:served_sgd", {"tail_s": [TAIL_S], "every": [EVERY]}, {})
        slower = register(slow.directory, name="served", tracking_uri=champion.tracking_uri)
        yield folder, champion, slower


def _health_slo(server: ServerProcess) -> dict:
    return server.client.get("/health").json()["slo"]


def _wait_for(server: ServerProcess, ready, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    slo = _health_slo(server)
    while not ready(slo) and time.monotonic() < deadline:
        time.sleep(0.2)
        slo = _health_slo(server)
    return slo


def test_live_latency_meets_the_tuned_slo_and_a_slower_version_promoted_by_hand_fires_its_alert_once(registered):
    import mlflow

    folder, champion, slower = registered
    client = mlflow.MlflowClient(champion.tracking_uri, registry_uri=champion.tracking_uri)
    tags = client.get_model_version("served", champion.version).tags
    assert Slo.from_json(tags[SLO_TAG]).limits == {"max_predict_ms": LIMIT_MS}
    assert SLO_TAG not in client.get_model_version("served", slower.version).tags

    receiver = WebhookReceiver()
    (folder / "monitoring.toml").write_text(MONITORING.format(url=receiver.url))
    server = ServerProcess("models:/served@champion", "--tracking-uri", champion.tracking_uri, "--poll-registry",
                           "0.5", "--config", str(folder / "monitoring.toml"), log=folder / "server.log").wait_ready()
    load = PredictingClient(server.url, [ROW], limit=100_000)
    try:
        load.start()
        slo = _wait_for(server, lambda s: s["met"] is not None, timeout=30)
        assert slo["budget"] == {"max_predict_ms": LIMIT_MS} and slo["quantile"] == QUANTILE
        assert slo["version"] == champion.version and "note" not in slo
        live = slo["live"]
        assert live["requests"] >= live["min_requests"] == 100  # 1 / (1 - 0.99)
        assert slo["met"] is True and 0 < live["predict_ms"] < LIMIT_MS, (slo, server.log())
        samples = scrape(server.client)
        assert value(samples, "frugalml_slo_limit", budget="max_predict_ms", slo_quantile="0.99") == LIMIT_MS
        assert 0 < value(samples, "frugalml_slo_live", budget="max_predict_ms", slo_quantile="0.99") < LIMIT_MS
        assert value(samples, "frugalml_slo_predict_seconds_count") >= 100
        assert value(samples, "frugalml_slo_predict_seconds_bucket", le=str(LIMIT_MS / 1e3)) > 0  # the limit's edge
        assert value(samples, "frugalml_alert_firing", rule=RULE_NAME) == 0
        _promtool_finds_nothing_to_lint(server.client.get("/metrics").text)
        _the_slo_rule_names_live_metrics(samples)
        assert receiver.events == []

        client.set_registered_model_alias("served", "champion", slower.version)  # by hand: no gate
        assert load.wait_for(slower.version, timeout=15), server.log()
        slo = _wait_for(server, lambda s: s["met"] is False, timeout=40)
        assert slo["met"] is False and slo["live"]["predict_ms"] > LIMIT_MS, (slo, server.log())
        assert slo["version"] == champion.version and f"version {slower.version} carries" in slo["note"]
        (event,) = receiver.wait_for(1, timeout=10)
        assert event["status"] == "firing" and event["rule"] == RULE_NAME and event["metric"] == LATENCY_METRIC
        assert event["value"] > LIMIT_MS and event["threshold"] == LIMIT_MS and event["model"] == "served"
        time.sleep(1.5)  # the alert holds, evaluated ~15 times more: still one event
        assert [e["status"] for e in receiver.events] == ["firing"]
        samples = scrape(server.client)
        assert value(samples, "frugalml_alert_firing", rule=RULE_NAME) == 1
        assert value(samples, "frugalml_slo_live", budget="max_predict_ms") > LIMIT_MS
        assert "carries no SLO" in server.log()
    finally:
        load.stopped.set()
        load.join(timeout=10)
        server.stop()
        receiver.close()
    assert all(status == 200 for status, _ in load.answers), load.answers[-5:]


def test_with_workers_the_monitor_process_keeps_one_slo_window_for_all_of_them(registered):
    """... and a worker started again serves the version the server started with, after its alias moved."""
    import mlflow

    folder, champion, slower = registered
    (folder / "workers.toml").write_text("interval_s = 0.1\nslo_window_s = 30\n")
    client = mlflow.MlflowClient(champion.tracking_uri, registry_uri=champion.tracking_uri)
    client.set_registered_model_alias("served", "workers", champion.version)  # the first test moved "champion"
    server = ServerProcess("models:/served@workers", "--tracking-uri", champion.tracking_uri, "--workers", "2",
                           "--config", str(folder / "workers.toml"), log=folder / "workers.log").wait_announced()
    try:
        workers = set()
        for _ in range(120):  # p99 is judged on 100 requests or more
            response = server.client.post("/predict", json={"rows": [ROW]})
            assert response.status_code == 200
            workers.add(response.headers["x-frugalml-worker"])
        slo = _wait_for(server, lambda s: s["live"]["requests"] >= 120, timeout=15)  # every worker's calls
        assert slo["met"] is True and slo["live"]["requests"] >= 120 and slo["live"]["predict_ms"] < LIMIT_MS, slo
        samples = scrape(server.client)
        assert value(samples, "frugalml_slo_predict_seconds_count") >= 120  # summed over the workers
        assert value(samples, "frugalml_slo_limit", budget="max_predict_ms") == LIMIT_MS
        assert 0 < value(samples, "frugalml_slo_live", budget="max_predict_ms") < LIMIT_MS
        assert value(samples, "frugalml_alert_firing", rule=RULE_NAME) == 0

        client.set_registered_model_alias("served", "workers", slower.version)
        server.kill_a_worker()
        versions = {worker: health["model"]["version"] for worker, health in server.health_by_worker().items()}
        assert versions == {"0": champion.version, "1": champion.version}  # one model, one monitor
    finally:
        server.stop()
    print(f"answered by workers {sorted(workers)}")


def _promtool_finds_nothing_to_lint(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: `make system-deps` installs the prometheus package"
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), \
        checked.stdout + checked.stderr


def _the_slo_rule_names_live_metrics(samples: dict) -> None:
    """deploy/'s SLO rule queries what a server of a model with an SLO exposes (test_deploy.py checks the rest)."""
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    used = set(re.findall(r"\bfrugalml_slo_[a-z_]+\b", rules))
    assert used == {"frugalml_slo_live", "frugalml_slo_limit"} and used <= set(samples)


def test_the_printed_slo_rules_pass_promtool_and_fire_on_a_slow_histogram(registered, tmp_path, capsys):
    from frugalml.cli import main

    _, champion, _ = registered
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: `make system-deps` installs the prometheus package"
    uri = f"models:/served/{champion.version}"
    assert main(["serve", uri, "--tracking-uri", champion.tracking_uri, "--print-slo-rules"]) == 0
    rules = capsys.readouterr().out
    assert "histogram_quantile(0.99," in rules and "> 0.2 and on (instance)" in rules
    (tmp_path / "slo.yml").write_text(rules)
    # 100 calls a minute, 2 of them between 200 and 500 ms: p99 lands at 350 ms, past the 200 ms limit
    # (p90 would be 92 ms, within it), on both instances; only "a" serves this model
    buckets = {"0.1": 98, "0.2": 98, "0.5": 100, "+Inf": 100}
    series = "\n".join(f"      - {{series: 'frugalml_slo_predict_seconds_bucket{{instance=\"{i}\", le=\"{le}\"}}', "
                       f"values: '0+{n}x15'}}" for i in "ab" for le, n in buckets.items())
    (tmp_path / "slo_test.yml").write_text(f"""
rule_files: [slo.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
{series}
      - {{series: 'frugalml_model_info{{instance="a", name="served", version="{champion.version}"}}', values: "1x15"}}
      - {{series: 'frugalml_model_info{{instance="b", name="other", version="1"}}', values: "1x15"}}
    alert_rule_test:
      - {{eval_time: 4m, alertname: FrugalmlSloPredictLatency, exp_alerts: []}}
      - eval_time: 10m
        alertname: FrugalmlSloPredictLatency
        exp_alerts:
          - exp_labels: {{severity: warning, model: served, budget: max_predict_ms, instance: a}}
            exp_annotations:
              summary: "p99 model predict time 350ms on a breaks the SLO of served (max_predict_ms = 200)"
""")
    for args in (("check", "rules", "slo.yml"), ("test", "rules", "slo_test.yml")):
        checked = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_frugalml_check_fails_the_version_promoted_by_hand_on_the_champions_slo(registered, tmp_path, capsys):
    """The slower version carries no SLO of its own: the check holds it to the champion's p99 limit."""
    from frugalml.cli import main

    _, champion, slower = registered
    gate = tmp_path / "gate.toml"  # rounds of 20 calls: one slow call in each, the p99 of every round
    gate.write_text(f"[gate]\nlatency_rounds = 3\nlatency_calls = {EVERY}\ntraining_rounds = 0\n")
    code = main(["check", f"models:/served/{slower.version}", "--baseline", f"models:/served/{champion.version}",
                 "--tracking-uri", champion.tracking_uri, "--gate", str(gate), "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 1, out
    report = json.loads((tmp_path / "r.json").read_text())
    (latency,) = [c for c in report["slo"] if c["budget"] == "max_predict_ms"]
    assert latency["broken"] and latency["value"] > LIMIT_MS and latency["limit"] == LIMIT_MS, latency
    assert "SLO broken" in out and "SLO from the baseline" in out


def test_a_model_without_an_slo_has_no_rules_to_print(registered, capsys):
    from frugalml.cli import main

    _, champion, slower = registered
    assert main(["serve", f"models:/served/{slower.version}", "--tracking-uri", champion.tracking_uri,
                 "--print-slo-rules"]) == 2
    assert "has no SLO" in capsys.readouterr().err


def test_the_slo_alert_fires_once_and_resolves_as_the_window_moves(diabetes):
    """The monitor alone: slow calls fire the SLO alert once; once they leave the window, it resolves."""
    from frugalml.registry import build_reference, fit_model

    class Served:  # what ServedSlo.of reads of a served model
        tags = {SLO_TAG: Slo.of_study({"max_predict_ms": 10}, {"quantile": 0.5}).to_json()}
        name, version = "m", "1"

    data, split = diabetes
    model = fit_model(data, "logistic_regression", {"batch_size": 32, "learning_rate": 0.01})
    slo = ServedSlo.of(Served())
    events = []

    class Collect(Notifier):
        def notify(self, event) -> None:
            events.append(event)

    monitor = ServingMonitor(build_reference(model, data, split), {"slo_window_s": 1, "slo_min_requests": 20},
                             slo=slo, notifiers=[Collect()])
    for _ in range(19):
        monitor.observe_predict(0.05, rows=1)
    monitor.observe_predict(0.05, rows=2)  # more rows than the SLO's batch_size: not what it limits
    monitor.process()
    assert events == [] and monitor.state().slo_predict_ms is None and monitor.state().slo_requests == 19
    monitor.observe_predict(0.05, rows=1)
    monitor.process()
    monitor.process()
    assert [(e.rule, e.status, e.value) for e in events] == [(RULE_NAME, "firing", pytest.approx(50.0))]
    time.sleep(1.1)  # the slow calls leave the window
    for _ in range(20):
        monitor.observe_predict(0.001, rows=1)
    monitor.process()
    assert [e.status for e in events] == ["firing", "resolved"] and monitor.state().slo_predict_ms == pytest.approx(1.0)
    monitor.stop()
