"""The shipped Prometheus rules and Grafana dashboard, checked with the real tools and a live server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from helpers import TESTS
from serve_helpers import ADMIN_TOKEN, scrape_until

DEPLOY = TESTS.parent / "deploy"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool not found: `make system-deps` installs the prometheus package"
    return found


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, cwd=cwd)


def test_alert_rules_and_config_pass_promtool(promtool):
    for args in (("check", "rules", "alerts.yml"), ("check", "config", "prometheus.yml"),
                 ("test", "rules", "alerts_test.yml")):
        checked = _run(promtool, *args, cwd=DEPLOY / "prometheus")
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_dashboard_and_alert_query_names_a_live_metric(server, diabetes):
    dashboard = json.loads((DEPLOY / "grafana" / "frugalml.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries.append(dashboard["templating"]["list"][1]["query"])
    queries += re.findall(r"expr: >?\s*\n?\s*(.+)", (DEPLOY / "prometheus" / "alerts.yml").read_text())
    used = {name for q in queries for name in re.findall(r"\bfrugalml_[a-z_]+\b", q)}
    assert len(used) >= 15
    used -= {name for name in used if name.startswith("frugalml_slo_")}  # a model with an SLO has them:
    # test_slo_serving.py checks those against a server of one
    _, split = diabetes
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    original = server.client.get("/admin/monitoring-config", headers=admin).json()
    alert = {"name": "drift", "metric": "drift.detected", "op": ">=", "threshold": 1}
    try:  # a window closed, labels in and an alert rule set: every family the queries use exists
        assert server.client.put("/admin/monitoring-config", json={**original, "alerts": [alert]},
                                 headers=admin).status_code == 200
        ids = server.client.post("/predict", json={"instances": split.X_test[:150].tolist()}).json()["ids"]
        server.client.post("/feedback", json=[{"prediction_id": i, "label": "tested_negative"} for i in ids[:20]])
        samples = scrape_until(server.client, lambda s: used <= set(s), timeout=30)
    finally:
        server.client.put("/admin/monitoring-config", json=original, headers=admin)
    missing = sorted(used - set(samples))  # sample names, as queries use them (_bucket, _total)
    assert not missing, f"queries name metrics the server does not expose: {missing}"
    ids_in_use = [p["id"] for p in dashboard["panels"]]
    assert len(ids_in_use) == len(set(ids_in_use))

