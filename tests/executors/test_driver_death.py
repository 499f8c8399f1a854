"""Nothing of a study outlives its driver: ``kill -9`` at any moment, on a busy machine."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from helpers import TESTS, write_study

STUDY = """
[study]
name = "orphans"
workers = 2
directory = "out"

[[workloads]]
train = "trainers:steady"
train_kwargs = { steps = 4000, step_s = 0.002 }
eval_every = 100
name = "steady"

[search]
method = "grid"
space = { offset = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5] }
"""
KILLS = 10
GRACE_S = 1.0


def _marked(token: str) -> list[psutil.Process]:
    """Every live process whose environment carries ``token`` (the driver's and all it started)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("FRUGALML_TEST_RUN") == token and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def _left_after(token: str, grace_s: float) -> list[psutil.Process]:
    """The marked processes alive ``grace_s`` after the kill; ``[]`` as soon as two scans in a row
    find none (none can appear then: only a marked process starts one)."""
    deadline = time.monotonic() + grace_s
    empty = 0
    while time.monotonic() < deadline:
        empty = 0 if _marked(token) else empty + 1
        if empty == 2:
            return []
        time.sleep(0.05)
    return _marked(token)


@pytest.fixture
def busy_cores():
    """Every core busy with other work for the whole test: a spinning process for each core that
    the machine's load leaves free (none inside ``make test``, whose other tests keep the cores busy;
    one per core when the test runs alone)."""
    cores = os.cpu_count() or 1
    busy = min(os.getloadavg()[0], cores * psutil.cpu_percent(interval=0.5) / 100)  # the past minute, and now
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(max(0, cores - round(busy)))]
    yield
    for hog in hogs:
        hog.kill()
        hog.wait()


@pytest.mark.slow
def test_kill_9_of_the_driver_at_random_moments_leaves_no_process_alive(tmp_path, busy_cores):
    study_file = write_study(tmp_path / "s.toml", STUDY)
    rng = random.Random(7)
    survivors: list[str] = []
    started_workers = 0
    for kill in range(KILLS):
        token = uuid.uuid4().hex
        env = {**os.environ, "PYTHONPATH": str(TESTS), "FRUGALML_TEST_RUN": token}
        driver = subprocess.Popen(
            [sys.executable, "-m", "frugalml.cli", "tune", str(study_file), "--fresh", "--no-progress"],
            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        # Half the kills land during start-up (imports, store, forkserver preload), half with workers training.
        wait_s = rng.uniform(0.3, 4.0) if kill % 2 == 0 else None
        deadline = time.monotonic() + (wait_s if wait_s is not None else 90.0)
        while time.monotonic() < deadline and driver.poll() is None:
            if wait_s is None and len(psutil.Process(driver.pid).children(recursive=True)) >= 3:
                time.sleep(rng.uniform(0.0, 1.0))  # the forkserver and two workers are up
                started_workers += 1
                break
            time.sleep(0.02)
        assert driver.poll() is None, "the study ended before it could be killed"
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        left = _left_after(token, GRACE_S)
        survivors += [f"kill {kill}: {p.pid} {' '.join(p.cmdline())[:80]}" for p in left]
        for process in left:
            process.kill()
    assert started_workers == KILLS // 2
    assert not survivors, "\n".join(survivors)
