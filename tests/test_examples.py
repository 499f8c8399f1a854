"""The shipped examples run as written."""

from __future__ import annotations

import os
import subprocess
import sys

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
