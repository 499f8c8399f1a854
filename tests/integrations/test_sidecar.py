"""The sidecar that samples a training process from outside it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from frugalml.integrations import Sidecar, SystemSampler


def _wait(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_known_200_mb_allocation_reads_as_200_mb_and_the_sidecar_is_outside_the_tree():
    with Sidecar(interval_s=0.05) as sidecar:
        before = sidecar.read()["memory_mb"]
        held = np.ones(200 * 2**20 // 8)  # np.ones writes every page
        sidecar.reset_peak()  # the peak comes back once a sample was measured after this
        assert _wait(lambda: "peak_memory_mb" in sidecar.read())
        after = sidecar.read()
        assert after["memory_mb"] - before == pytest.approx(200, rel=0.05)
        assert after["age_s"] < 1.0 and after["peak_memory_mb"] >= after["memory_mb"]
        assert sidecar.sidecar_pid not in {p.pid for p in psutil.Process().children(recursive=True)}
        del held
        pid, path = sidecar.sidecar_pid, sidecar.path
    assert _wait(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    assert not Path(path).exists()


def test_the_sidecar_exits_when_the_sampled_process_is_killed(tmp_path):
    code = (
        "import sys, time; from frugalml.integrations import Sidecar; s = Sidecar().start(); "
        "print(s.sidecar_pid, s.path, flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pid, path = child.stdout.readline().split()
    child.send_signal(signal.SIGKILL)
    child.wait()
    gone = lambda: not psutil.pid_exists(int(pid)) or psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE  # noqa: E731
    assert _wait(gone)
    assert not os.path.exists(path)  # it removed its file


def test_a_peak_measured_before_a_reset_is_not_reported_as_the_new_windows():
    with Sidecar(interval_s=0.05) as sidecar:
        held = np.ones(100 * 2**20 // 8)
        sidecar.reset_peak()
        assert _wait(lambda: "peak_memory_mb" in sidecar.read())
        high = sidecar.read()["peak_memory_mb"]
        os.kill(sidecar.sidecar_pid, signal.SIGSTOP)  # a starved sidecar: no sample after the reset
        del held
        try:
            sidecar.reset_peak()
            stale = sidecar.read()
            assert "peak_memory_mb" not in stale and stale["memory_mb"] >= high - 1  # the old sample, as such
        finally:
            os.kill(sidecar.sidecar_pid, signal.SIGCONT)
        assert _wait(lambda: sidecar.read().get("peak_memory_mb", high) < high - 50)


@pytest.mark.parametrize("sidecar", [True, False], ids=["sidecar", "in-process"])
def test_windows_report_peak_memory_cpu_and_step_time(sidecar):
    sampler = SystemSampler(interval_s=0.05, sidecar=sidecar).start()
    try:
        for _ in range(20):
            end = time.perf_counter() + 0.005
            while time.perf_counter() < end:
                pass
            sampler.step()
        held = np.ones(100 * 2**20 // 8)
        time.sleep(0.2)
        window = sampler.window()
        assert 5.0 <= window["mean_step_ms"] < 50
        assert window["cpu_s"] > 0 and 0 <= window["cpu_percent"] < 400
        assert window["memory_mb"] > 100 and window["wall_s"] > 0.1
        del held
        time.sleep(0.2)
        later = sampler.window(steps=10)  # no step marks: time since the last window / 10 steps
        assert later["mean_step_ms"] == pytest.approx(100 * (later["wall_s"] - window["wall_s"]), rel=0.01)
        time.sleep(0.3)  # the freed 100 MB is not in the peak since the reset, even if no sample came
        assert sampler.window()["memory_mb"] < window["memory_mb"] - 50
    finally:
        sampler.close()
