"""Helpers for monitor tests: real child processes driven step by step over pipes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from typing import Iterator

import pytest

# Child code calls this between phases: it says "ready" and waits for the test.
STEP = "import sys\ndef step():\n    print('ready', flush=True)\n    sys.stdin.readline()\n"


class Child:
    """A ``python -c`` child in its own session; ``step()`` lets it run to its next pause."""

    def __init__(self, code: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-c", STEP + textwrap.dedent(code)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, so cleanup reaches grandchildren
        )
        self.pid = self.popen.pid

    def wait_ready(self) -> None:
        line = self.popen.stdout.readline()
        assert line.strip() == "ready", f"child said {line!r} (exit code {self.popen.poll()})"

    def step(self) -> None:
        """Let the child run from its current pause to the next one."""
        self.popen.stdin.write("\n")
        self.popen.stdin.flush()
        self.wait_ready()

    def kill(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=10)


@pytest.fixture
def step_prelude() -> str:
    """The code defining ``step()``, for children that start grandchildren of their own."""
    return STEP


@pytest.fixture
def spawn() -> Iterator:
    """``spawn(code)`` starts a child and waits for its first ``step()``; all are killed after."""
    children: list[Child] = []

    def _spawn(code: str, wait: bool = True) -> Child:
        child = Child(code)
        children.append(child)
        if wait:
            child.wait_ready()
        return child

    yield _spawn
    for child in children:
        child.kill()
        for stream in (child.popen.stdin, child.popen.stdout):
            stream.close()
