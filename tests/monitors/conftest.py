"""Helpers for monitor tests: real child processes driven step by step over pipes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import types
from types import SimpleNamespace
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


class FakeNvml(types.ModuleType):
    """Stands in for ``pynvml``: devices are lists of (pid, used bytes) plus a utilisation."""

    class NVMLError(Exception):
        pass

    def __init__(self, devices: list[dict], init_error: bool = False) -> None:
        super().__init__("pynvml")
        self.devices, self.init_error = devices, init_error
        self.init_calls = self.shutdown_calls = 0

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict:
        return self.devices[index]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: dict) -> list:
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in handle["compute"]]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: dict) -> list:
        if "graphics" not in handle:
            raise self.NVMLError("Not Supported")
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in handle["graphics"]]

    def nvmlDeviceGetUtilizationRates(self, handle: dict) -> SimpleNamespace:
        return SimpleNamespace(gpu=handle["util"], memory=0)


@pytest.fixture
def fake_nvml(monkeypatch):
    def install(devices: list[dict], init_error: bool = False) -> FakeNvml:
        nvml = FakeNvml(devices, init_error)
        monkeypatch.setitem(sys.modules, "pynvml", nvml)
        return nvml

    return install
