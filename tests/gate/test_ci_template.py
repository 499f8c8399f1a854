"""The CI template in examples/ci: its shell gate runs for real; the workflow calls it."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

CI = Path(__file__).resolve().parents[2] / "examples" / "ci"


def _study_file(tmp_path: Path) -> Path:
    """The template's study file, its step-time tolerance widened from 25 % to 150 %: in a loaded
    suite the same model, re-measured 3 or 5 rounds a side, read 1.73x and 2.18x slower (2 runs of
    4 on 2026-12-06, judged on the rounds' means; from 5 rounds each side's fastest round is judged
    now). This test is about the template's flow; how often the gate cries wolf, quiet
    and under load, is benchmarks/gate_false_alarms.py's to measure."""
    text = (CI / "study.toml").read_text()
    widened = text.replace("max_relative_regression = 0.25", "max_relative_regression = 1.5")
    assert widened != text
    path = tmp_path / "study.toml"
    path.write_text(widened)
    return path


def _gate(tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'registry.db'}", "OUT": str(tmp_path / "gate"),
           "FRUGALML": f"{sys.executable} -m frugalml.cli", "PROMOTE": "1", "STUDY_FILE": str(_study_file(tmp_path))}
    return subprocess.run(["bash", str(CI / "gate.sh")], capture_output=True, text=True, env=env, timeout=600,
                          cwd=tmp_path)


def test_the_shell_gate_registers_a_first_champion_then_gates_the_next_candidate(tmp_path):
    first = _gate(tmp_path)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "no champion yet" in (tmp_path / "gate" / "summary.md").read_text()

    second = _gate(tmp_path)  # the same study again: the same model, measured twice, must pass
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-2000:]
    summary = (tmp_path / "gate" / "summary.md").read_text()
    assert "**PASS**" in summary and "| mean_step_ms |" in summary and "ci-diabetes version 1" in summary
    suite = ET.parse(tmp_path / "gate" / "junit.xml").getroot().find("testsuite")
    assert suite.get("failures") == "0" and int(suite.get("tests")) >= 5
    assert "registered ci-diabetes version 2 (alias champion)" in second.stdout  # PROMOTE=1: it passed


def test_the_workflow_runs_the_shell_gate_and_posts_its_summary():
    workflow = yaml.safe_load((CI / "github-actions.yml").read_text())
    steps = workflow["jobs"]["gate"]["steps"]
    runs = " ".join(step.get("run", "") for step in steps)
    assert "bash examples/ci/gate.sh" in runs and "GITHUB_STEP_SUMMARY" in runs
    assert any(step.get("with", {}).get("path") == "gate/summary.md" for step in steps)
