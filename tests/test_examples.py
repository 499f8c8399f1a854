"""The shipped examples run as written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import TESTS

EXAMPLES = TESTS.parent / "examples"


def test_custom_training_example_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "custom_training.py")], cwd=tmp_path, capture_output=True, text=True,
        timeout=300, env=os.environ,
    )
    assert result.returncode == 0, result.stderr
    assert "saved" in result.stdout and "batch_size" in result.stdout
    assert (tmp_path / "studies" / "custom" / "frugalml.db").exists()
    assert "INFO" not in result.stderr


def _code(example: str) -> str:
    """An example file without its docstring: the code block the README shows."""
    return (EXAMPLES / example).read_text().split('"""\n\n', 1)[1]


def _run(example: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / example)], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=os.environ)


def test_readme_shows_the_integration_examples_verbatim():
    readme = (TESTS.parent / "README.md").read_text()
    for example in ("ray_tune_stopper.py", "optuna_pruner.py"):
        assert f"```python\n{_code(example)}```" in readme, f"README's copy of examples/{example} is stale"


@pytest.mark.slow  # integrations/test_optuna.py prunes a plain objective for memory across processes
def test_optuna_example_prunes_the_trials_over_the_memory_budget(tmp_path):
    result = _run("optuna_pruner.py", tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line[:1].isdigit()]  # number params state message
    assert len(lines) == 6
    pruned = [line for line in lines if "} PRUNED " in line]
    assert pruned and all(line.endswith("> budget 400 MB") for line in pruned)
    assert all("} COMPLETE None" in line for line in lines if line not in pruned)
    assert (tmp_path / "optuna-study.db").exists()


@pytest.mark.slow  # integrations/test_ray_tune.py stops an unmodified trainable for memory
def test_ray_tune_example_stops_the_trial_over_the_memory_budget(tmp_path):
    result = _run("ray_tune_stopper.py", tmp_path)
    assert result.returncode == 0, result.stderr
    best, stops = result.stdout.strip().splitlines()[-2:]
    assert stops.count("StopInfo(rule='max_memory_mb'") == 1 and "threshold=500.0" in stops
    assert best == "{'megabytes': 20}"
