"""``one_line``: the one way an error becomes the line a record, log or response shows."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow.exceptions import MlflowException

from frugalml.exceptions import MESSAGE_CHARS, one_line


@pytest.mark.parametrize(("error", "options", "expected"), [
    (ValueError("bad width\n  at line 3"), {}, "bad width"),
    (ValueError("bad width\n  at line 3"), {"typed": True}, "ValueError: bad width"),
    (ValueError("\n\n  first\nsecond"), {}, "first"),
    (ValueError("a\n  b\tc "), {"squash": True, "typed": True}, "ValueError: a b c"),
    (KeyError(), {}, "KeyError"),
    (KeyError(), {"typed": True}, "KeyError"),
    ("", {"last": True}, ""),
    ("one\ntwo\n", {"last": True}, "two"),
])
def test_one_line_takes_the_line_asked_for(error, options, expected):
    assert one_line(error, **options) == expected


def test_one_line_is_cut_to_the_limit():
    assert len(one_line(RuntimeError("x" * 5000))) == MESSAGE_CHARS
    assert one_line("abcdef", limit=3) == "abc"


def test_a_subprocess_traceback_reads_as_its_exception():
    done = subprocess.run([sys.executable, "-c", "raise KeyError('no column target')"], capture_output=True,
                          text=True, check=False)
    assert done.stderr.startswith("Traceback")
    assert one_line(done.stderr, last=True) == "KeyError: 'no column target'"


def test_an_mlflow_error_shows_its_message_not_its_json():
    error = MlflowException("Registered Model with name=x not found\nmore detail")
    assert one_line(error) == "Registered Model with name=x not found"
