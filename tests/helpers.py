"""Helpers shared by tests: writing study files and running the CLI as a user would."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Iterator
from types import SimpleNamespace

import httpx
import psutil

TESTS = Path(__file__).resolve().parent


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    A port from that range (what binding port 0 gives) can be taken meanwhile by a
    client's outgoing connection, including a client polling that very port, which
    on Linux then connects to itself; a server started there fails to bind.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(100):
        port = random.randint(max(1024, low - 12000), low - 1)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port found below the ephemeral range")


def write_study(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def _cli_env() -> dict[str, str]:
    """This environment, with the tests' trainers importable."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``frugalml ARGS`` in a subprocess with the tests' trainers importable."""
    return subprocess.run(
        [sys.executable, "-m", "frugalml.cli", *args], cwd=cwd, env=_cli_env(), capture_output=True, text=True,
        timeout=timeout,
    )


def cli_in_process(*args: str, capfd, caplog, monkeypatch, cwd: Path | None = None,
                   workers: bool = False) -> SimpleNamespace:
    """``frugalml ARGS`` through the CLI's ``main`` in this process (from ``cwd``), as :func:`cli` returns it.

    What a real process would add to its stderr fails here: a Python warning, or a logged warning
    (logging's lastResort prints those). Unless it may start trial ``workers``, no process may have
    been started (it stopped before any worker).
    """
    import logging
    import warnings

    import psutil

    from frugalml.cli import main

    children = {p.pid for p in psutil.Process().children(recursive=True)}
    levels = {name: logging.getLogger(name).level for name in ("mlflow", "alembic")}
    capfd.readouterr()
    caplog.clear()
    try:
        with monkeypatch.context() as patch, warnings.catch_warnings(record=True) as caught:
            if cwd is not None:
                patch.chdir(cwd)
            patch.setenv("MLFLOW_LOGGING_LEVEL", os.environ.get("MLFLOW_LOGGING_LEVEL", "WARNING"))  # main sets it
            warnings.simplefilter("default")
            try:
                code = main(list(args))
            except SystemExit as exited:  # argparse refuses the command line before any command runs
                code = exited.code
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    out, err = capfd.readouterr()
    if not workers:
        assert {p.pid for p in psutil.Process().children(recursive=True)} <= children
    hidden = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)  # as Python's default
    assert not [w for w in caught if not issubclass(w.category, hidden)], [str(w.message) for w in caught]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def start_tune(study_file: Path, cwd: Path | None = None, **popen: object) -> subprocess.Popen:
    """Start ``frugalml tune STUDY_FILE --no-progress`` (the tests' trainers importable), its output piped as text."""
    return subprocess.Popen([sys.executable, "-m", "frugalml.cli", "tune", str(study_file), "--no-progress"],
                            cwd=cwd, env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)


def mlflow_store(folder: Path) -> str:
    """The URI of a new MLflow SQLite store ``folder/mlflow.db``, made as frugalml makes a study's: from the template."""
    from frugalml.tracking import seed_sqlite_store

    uri = "sqlite:///" + str(Path(folder).resolve() / "mlflow.db")
    seed_sqlite_store(uri)
    return uri


def mlflow_trial_runs(uri: str, study: str) -> dict:
    """trial_id -> MLflow Run of a study's trial runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id], max_results=10000)
    return {r.data.tags["frugalml.trial_id"]: r for r in runs if "frugalml.trial_id" in r.data.tags}


class FakeNvml(types.ModuleType):
    """Stands in for ``pynvml``: devices are lists of (pid, used bytes) plus a utilisation
    and, optionally, an energy counter (``energy_mj``)."""

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

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: dict) -> int:
        """The device's ``energy_mj`` (a test raises it between samples); absent: not supported."""
        if "energy_mj" not in handle:
            raise self.NVMLError("Not Supported")
        return handle["energy_mj"]


class ServerProcess:
    """``frugalml serve ARGS`` in a subprocess on a free loopback port."""

    def __init__(self, *args: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        command = [sys.executable, "-m", "frugalml.cli", "serve", *args, "--host", "127.0.0.1",
                   "--port", str(self.port), "--log-level", "warning"]
        self._log = log.open("w")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=dict(os.environ))
        self.client = httpx.Client(base_url=self.url, timeout=30, trust_env=False)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = 90) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self.client.get("/health").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log()}")

    def wait_line(self, timeout: float = 90) -> ServerProcess:
        """Until the server prints its "serving" line, asking nothing of it before."""
        deadline = time.monotonic() + timeout
        while "frugalml: serving" not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server not announced after {timeout} s:\n{self.log()}")
            time.sleep(0.005)
        return self

    def wait_announced(self, timeout: float = 90) -> ServerProcess:
        """Until the server prints its "serving" line: with --workers or Ray replicas, once every one
        is up (/health answers as soon as the first is)."""
        return self.wait_ready(timeout).wait_line(timeout)

    def workers(self) -> list[psutil.Process]:
        """With --workers: the worker processes (forked by the server's forkserver, a child of the server)."""
        found = []
        for process in psutil.Process(self.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):  # one that exited and was reaped since
                if process.ppid() != self.process.pid:
                    found.append(process)
        return found

    def kill_a_worker(self, timeout: float = 90) -> None:
        """With --workers: SIGKILL one worker; returns once the server has started another (which
        may still be loading its model)."""
        workers = self.workers()
        assert len(workers) == 2, workers
        workers[0].kill()
        deadline = time.monotonic() + timeout
        while "starting it again" not in self.log() or len(self.workers()) < 2:
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.2)

    def health_by_worker(self, workers: int = 2, timeout: float = 60) -> dict[str, dict]:
        """Each worker's /health answer, by its x-frugalml-worker header (a new connection may reach
        any worker; one still loading its model answers none)."""
        answers: dict[str, dict] = {}
        deadline = time.monotonic() + timeout
        while len(answers) < workers and time.monotonic() < deadline:
            with httpx.Client(base_url=self.url, timeout=30, trust_env=False) as fresh:
                answer = fresh.get("/health")
            if answer.status_code == 200:
                answers[answer.headers["x-frugalml-worker"]] = answer.json()
        return answers

    def stop(self) -> None:
        """Stop the server; fails the test if a process it started (a worker, a challenger, the
        monitor) is still alive 3 s after it exited."""
        self.client.close()
        children = []
        if self.process.poll() is None:
            with contextlib.suppress(psutil.Error):
                children = psutil.Process(self.process.pid).children(recursive=True)
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        alive = still_running(children, timeout=3)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        assert not alive, f"the server left {[p.pid for p in alive]} running after it exited"


def still_running(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of ``processes`` still running after up to ``timeout`` s; a zombie (exited, not yet
    reaped by whoever adopted it) has stopped."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for process in processes:
            with contextlib.suppress(psutil.Error):
                if process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def halving_study(directory, **execution):
    """The RANKED_POINTS under a 150 MB budget with ASHA (rungs at 10, 20, 40 steps; keep 1 in 2)."""
    import trainers
    from frugalml import Search, Study, Workload

    return Study(
        name="halving",
        workloads=[Workload(train=trainers.ranked, eval_every=10, max_steps=80, steps=80, name="ranked")],
        search=Search(space={"quality": sorted({q for q, _ in trainers.RANKED_POINTS}), "megabytes": [0, 300]},
                      points=[{"quality": q, "megabytes": m} for q, m in trainers.RANKED_POINTS]),
        budget={"max_memory_mb": 150}, stopping={"halving": {"min_steps": 10, "reduction_factor": 2}},
        sample_interval_s=0.05, directory=str(directory), mlflow_uri=None, **{"workers": 1, **execution},
    )


@contextlib.contextmanager
def importable(*folders: Path) -> Iterator[None]:
    """``folders`` on ``sys.path`` here and on ``PYTHONPATH`` for the worker and server processes
    started in the block (they unpickle models whose classes live there)."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([*map(str, folders), before or ""])
    sys.path[:0] = [str(folder) for folder in folders]
    try:
        yield
    finally:
        for folder in folders:
            sys.path.remove(str(folder))
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before
