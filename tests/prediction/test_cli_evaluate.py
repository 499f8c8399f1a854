"""`frugalml evaluate-prediction` as a user runs it."""

from __future__ import annotations

import json

from frugalml.cli._evaluate import table_rows
from frugalml.reproduce import ErrorRow
from helpers import cli

PREDICTORS = ("k=1", "k=2", "k=5", "leave config out", "leave batch out", "lr effect", "batch effect")


def test_quick_evaluation_reports_errors_after_1_2_and_5_windows_and_across_configurations():
    out = cli("evaluate-prediction", "--quick", "--workloads", "diabetes", "--format", "json", timeout=240)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {(r["metric"], r["predictor"]) for r in rows} == {
        (m, p) for m in ("mean_step_ms", "peak_memory_mb") for p in PREDICTORS
    }
    k2 = {r["metric"]: r for r in rows if r["predictor"] == "k=2"}
    assert k2["peak_memory_mb"]["n"] == 6 and k2["peak_memory_mb"]["value"] < 0.10
    printed = table_rows([ErrorRow(**{k: v for k, v in r.items() if k != "label"}) for r in rows],
                         {"diabetes": "diabetes"})
    assert [(p["workload"], p["metric"]) for p in printed] == [("diabetes", "mean_step_ms"), ("diabetes", "peak_memory_mb")]
    assert all(p["k=2"].endswith("(n=6)") for p in printed)


def test_an_unknown_workload_is_a_one_line_error():
    bad = cli("evaluate-prediction", "--quick", "--workloads", "wave_energy")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "casp_protein" in bad.stderr
