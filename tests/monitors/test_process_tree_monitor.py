from __future__ import annotations

import os
import statistics
import sys
import time

import psutil
import pytest

from frugalml.monitors import ProcessTreeMonitor

ALLOCATE_200_MB = """
step()
buffer = bytearray(200 * 2**20)
for i in range(0, len(buffer), 4096):
    buffer[i] = 1
step()
"""


def test_allocation_of_200_mb_is_counted_within_5_percent(spawn):
    child = spawn(ALLOCATE_200_MB)
    monitor = ProcessTreeMonitor(child.pid)
    before = monitor.sample()
    child.step()
    after = monitor.sample()
    assert after["memory_mb"] - before["memory_mb"] == pytest.approx(200, rel=0.05)
    assert after["rss_mb"] - before["rss_mb"] == pytest.approx(200, rel=0.05)
    assert after["n_processes"] == 1


def test_memory_mapped_file_grows_rss_but_not_memory(spawn, tmp_path):
    path = tmp_path / "data.bin"
    with open(path, "wb") as file:
        for _ in range(200):
            file.write(b"\x01" * 2**20)
    child = spawn(
        f"""
        import mmap
        step()
        with open({str(path)!r}, "rb") as file:
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
            total = sum(mapped[i] for i in range(0, len(mapped), 4096))
            step()
        """
    )
    monitor = ProcessTreeMonitor(child.pid)
    before = monitor.sample()
    child.step()
    after = monitor.sample()
    assert after["rss_mb"] - before["rss_mb"] > 150
    assert after["memory_mb"] - before["memory_mb"] < 20


def test_grandchild_memory_is_counted(spawn, step_prelude):
    # The grandchild inherits stdin/stdout, so the test drives it directly.
    parent = spawn(
        f"""
        import subprocess, sys
        subprocess.run([sys.executable, "-c", {step_prelude + ALLOCATE_200_MB!r}])
        """
    )
    monitor = ProcessTreeMonitor(parent.pid)
    before = monitor.sample()
    parent.step()
    after = monitor.sample()
    assert before["n_processes"] == after["n_processes"] == 2
    assert after["memory_mb"] - before["memory_mb"] == pytest.approx(200, rel=0.05)
    grandchild = psutil.Process(parent.pid).children()[0]
    assert monitor.pids == (parent.pid, grandchild.pid)


def test_cpu_percent_of_busy_and_sleeping_children(spawn):
    busy = spawn("step()\nwhile True:\n    pass\n", wait=False)
    sleeping = spawn("step()\nimport time\ntime.sleep(60)\n", wait=False)
    for child in (busy, sleeping):
        child.wait_ready()
        child.popen.stdin.write("\n")
        child.popen.stdin.flush()
    busy_monitor, sleeping_monitor = ProcessTreeMonitor(busy.pid), ProcessTreeMonitor(sleeping.pid)
    # An independent reading of the same second: on a loaded machine the busy child gets
    # less than a whole core, and the monitor must report what it got.
    busy_process = psutil.Process(busy.pid)
    cpu_before, started = sum(busy_process.cpu_times()[:2]), time.monotonic()
    time.sleep(1.0)
    busy_sample, sleeping_sample = busy_monitor.sample(), sleeping_monitor.sample()
    got = 100 * (sum(busy_process.cpu_times()[:2]) - cpu_before) / (time.monotonic() - started)
    assert got > 5 and busy_sample["cpu_percent"] == pytest.approx(got, abs=10)  # > 5: busy, however loaded
    assert sleeping_sample["cpu_percent"] < 10
    assert busy_sample["cpu_s"] > sleeping_sample["cpu_s"]


def test_cpu_s_includes_children_that_already_exited(spawn):
    child = spawn(
        """
        import subprocess, sys
        step()
        burn = "import time\\nwhile time.process_time() < 0.5: pass"
        subprocess.run([sys.executable, "-c", burn], check=True)
        step()
        """
    )
    monitor = ProcessTreeMonitor(child.pid)
    before = monitor.sample()["cpu_s"]
    child.step()
    sample = monitor.sample()
    assert sample["n_processes"] == 1  # the burner is gone, its CPU is in children_*
    assert sample["cpu_s"] - before >= 0.45


def test_cpu_percent_is_left_out_over_a_window_shorter_than_clock_ticks(spawn):
    child = spawn("step()\n")
    created = time.monotonic()
    monitor = ProcessTreeMonitor(child.pid)
    first = monitor.sample()
    if time.monotonic() - created < monitor.min_cpu_window_s:  # not when a loaded machine paused this process
        assert "cpu_percent" not in first  # right after creation
    time.sleep(monitor.min_cpu_window_s)
    assert "cpu_percent" in monitor.sample()


def test_write_mb_counts_fsynced_writes(spawn, tmp_path):
    child = spawn(
        f"""
        import os
        step()
        with open({str(tmp_path / "out.bin")!r}, "wb") as file:
            for _ in range(50):
                file.write(os.urandom(2**20))
            file.flush()
            os.fsync(file.fileno())
        step()
        """
    )
    try:
        psutil.Process(child.pid).io_counters()
    except psutil.AccessDenied:
        pytest.skip("io_counters is not permitted for this process here")
    monitor = ProcessTreeMonitor(child.pid)
    assert monitor.sample()["write_mb"] < 1
    child.step()
    sample = monitor.sample()
    assert sample["write_mb"] >= 45
    assert sample["read_mb"] >= 0


def test_sample_detailed_adds_uss_and_peak_rss(spawn):
    child = spawn(ALLOCATE_200_MB)
    child.step()
    sample = ProcessTreeMonitor(child.pid).sample_detailed()
    assert sample["uss_mb"] >= 200
    if sys.platform.startswith("linux"):
        assert sample["peak_rss_mb"] >= sample["rss_mb"] >= 200
    assert {"memory_mb", "rss_mb", "cpu_s", "n_processes"} <= set(sample)


def test_ended_root_gives_empty_samples(spawn):
    child = spawn("step()\n")
    monitor = ProcessTreeMonitor(child.pid)
    child.popen.kill()
    psutil.Process(child.pid).wait(timeout=10)  # a zombie now, not yet reaped
    assert monitor.sample() == {}
    child.popen.wait()
    assert monitor.sample() == {}
    assert monitor.sample_detailed() == {}


def test_process_that_vanished_after_listing_is_skipped(spawn, monkeypatch):
    gone = spawn("step()\n")
    gone.kill()
    child = spawn("step()\n")
    monitor = ProcessTreeMonitor(child.pid)
    monkeypatch.setattr(
        "frugalml.monitors._process_tree.tree_pids", lambda pid: [pid, gone.pid, 2**22 + 1]
    )
    assert monitor.sample()["n_processes"] == 1
    assert monitor.sample_detailed()["n_processes"] == 1


def test_sampling_a_tree_with_churning_children_never_raises(spawn):
    child = spawn(
        """
        import os
        step()
        while True:
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
        """
    )
    child.popen.stdin.write("\n")
    child.popen.stdin.flush()
    monitor = ProcessTreeMonitor(child.pid)
    counts = {monitor.sample()["n_processes"] for _ in range(500)}
    counts.add(monitor.sample_detailed()["n_processes"])
    assert counts <= {1, 2}


def test_sample_of_a_small_tree_costs_well_under_a_millisecond(spawn):
    parent = spawn(
        """
        import subprocess, sys
        sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
        children = [subprocess.Popen(sleep, stdout=subprocess.DEVNULL) for _ in range(3)]
        step()
        """
    )
    monitor = ProcessTreeMonitor(parent.pid)
    durations = []
    for _ in range(200):  # CPU time (user + kernel reading /proc): waiting for a busy core is not cost
        start = time.process_time()
        sample = monitor.sample()
        durations.append(time.process_time() - start)
    assert sample["n_processes"] == 4
    assert statistics.median(durations) < 1e-3


def test_missing_pid_raises_at_creation():
    with pytest.raises(psutil.NoSuchProcess):
        ProcessTreeMonitor(2**22 + 1)


def test_monitoring_the_current_process_reports_all_fast_metrics():
    with ProcessTreeMonitor(os.getpid()) as monitor:
        time.sleep(monitor.min_cpu_window_s)
        sample = monitor.sample()
    assert {"memory_mb", "rss_mb", "cpu_percent", "cpu_s", "n_processes"} <= set(sample)
    assert 0 < sample["memory_mb"] <= sample["rss_mb"]
