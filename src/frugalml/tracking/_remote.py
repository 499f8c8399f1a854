"""MLflow tracking in a process of its own, so that the driver never imports MLflow.

Importing MLflow and its SQL store costs ~1.4 CPU-s, holding the driver's GIL while its
watchdog and scheduler want it, and tearing those ~2,000 modules down when the driver's
interpreter exits another ~0.5 s. The tracking process (:mod:`frugalml.tracking._child`)
starts importing as soon as it is made, while the driver sets its first study up; later
studies of the same driver (``frugalml reproduce``, a notebook, a test session) reuse it.
It dies with the driver, leaves without MLflow's teardown when the driver exits, and
Ctrl-C in the terminal is the driver's alone (the process has a process group of its own).
"""

from __future__ import annotations

import atexit
import os
import site
import socket
import subprocess
import sys
import threading
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from frugalml.processes import DRIVER_PID_ENV, PRELOAD_ENV
from frugalml.records import TrialRecord
from frugalml.tracking._base import Tracker
from frugalml.tracking._mlflow import TrackingError
from frugalml.tracking._protocol import Close, Failed, LogStudy, LogTrial, Open, Request, Shutdown

EXIT_WAIT_S = 5.0  # once its socket closes the process only exits; one that does not is killed
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder that holds this frugalml


def _environment() -> dict[str, str]:
    """The driver's environment, without what is meant for one of its forkservers, with this
    frugalml importable (a source tree's; an installed one's folder is on the path already)."""
    env = {name: value for name, value in os.environ.items() if name not in (DRIVER_PID_ENV, PRELOAD_ENV)}
    installed = {*site.getsitepackages(), site.getusersitepackages()}
    if _PACKAGE_ROOT not in installed:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
    if threading.current_thread() is threading.main_thread():  # the parent-death signal is tied to the thread
        env[DRIVER_PID_ENV] = "1"
    return env


class _Process:
    """The tracking process and its socket; one request and its reply at a time."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        try:  # -P: not the working folder first (a user's mlflow.py or logging.py there)
            self.process = subprocess.Popen(
                [sys.executable, "-P", "-m", "frugalml.tracking._child", str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=_environment(), process_group=0,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.owner = os.getpid()
        self.socket = ours
        self.connection = Connection(os.dup(ours.fileno()))
        self.lock = threading.Lock()
        self.broken = False

    @property
    def usable(self) -> bool:
        return self.owner == os.getpid() and not self.broken and self.process.poll() is None

    def call(self, request: Request) -> str | None:
        if self.owner != os.getpid():
            raise TrackingError("the MLflow tracking process belongs to the process this one was forked from")
        with self.lock:
            try:
                if self.broken:
                    raise EOFError
                self.connection.send(request)
                reply = self.connection.recv()
            except (EOFError, OSError):
                self.broken = True
                raise TrackingError("the MLflow tracking process ended unexpectedly") from None
            except BaseException:  # Ctrl-C between a request and its reply: the next reply would be this one's
                self.broken = True
                raise
        if isinstance(reply, Failed):
            raise TrackingError(reply.message) if reply.tracking else RuntimeError(reply.message)
        return reply.value

    def end(self) -> None:
        """End the socket (the process exits at its end; a thread waiting on it wakes) and reap
        the process, killing one that lingers."""
        if self.owner != os.getpid():
            self.forget()
            return
        try:
            self.connection.send(Shutdown())  # not a death: the studies still open are not ended KILLED
        except OSError:
            pass
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.forget()
        try:
            self.process.wait(EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def forget(self) -> None:
        """Close this process's copies of the socket (in a forked copy of the driver: only those)."""
        self.connection.close()
        self.socket.close()


_shared: _Process | None = None
_shared_lock = threading.Lock()


def _process() -> _Process:
    """This driver's tracking process, started on first use (or again, if it died)."""
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.usable:
            if _shared is not None:
                _shared.end()
            _shared = _Process()
        return _shared


def end_tracking_process() -> None:
    """End this driver's tracking process, if it has one (at exit; a study ends only its own run)."""
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.end()
            _shared = None


def _after_fork() -> None:
    """A forked copy of the driver starts its own tracking process if it tracks; the original's
    socket is closed here so that the original's exit still ends it."""
    global _shared, _shared_lock
    _shared_lock = threading.Lock()
    if _shared is not None:
        _shared.forget()
        _shared = None


os.register_at_fork(after_in_child=_after_fork)
atexit.register(end_tracking_process)


class TrackerProcess(Tracker):
    """An :class:`~frugalml.tracking.MlflowTracker` in the driver's tracking process, which is
    started now if the driver has none (make the first one on the thread that outlives the
    study: a process started on the main thread gets a parent-death signal, tied to it).

    Its methods block until the process answers; nothing is opened until the first of them
    (or :meth:`open`), whose failure raises as MlflowTracker's constructor would. When the
    process died, :meth:`close` ends the study's runs from a new one, so that none is left
    RUNNING.
    """

    def __init__(self, uri: str, study_name: str, artifact_dir: str | Path | None = None,
                 params: dict[str, object] | None = None) -> None:
        self.uri = uri
        self._key = uuid.uuid4().hex
        self._opening = Open(self._key, uri, study_name, str(artifact_dir) if artifact_dir is not None else None,
                             dict(params or {}), tuple(sys.path))
        self._opened = False  # tried: a failed opening is not tried again
        self._process = _process()
        self._closed = False

    def open(self) -> None:
        """Open the study's experiment and run in the tracking process (once)."""
        if not self._opened:
            self._opened = True
            self._call(self._opening)

    def log_trial(self, record: TrialRecord) -> str | None:
        self.open()
        return self._call(LogTrial(self._key, record))

    def log_study(self, result: Any) -> None:
        self.open()
        self._call(LogStudy(self._key, result))

    def close(self, status: str = "FINISHED") -> None:
        """End the study's run. A failure raises for ``FINISHED`` only, as MlflowTracker's does
        (a ``FAILED`` close may follow it)."""
        if self._closed:
            return
        opened, self._opened = self._opened, True  # a study whose tracking never opened has no run to end
        try:
            if opened and not self._process.usable:
                self._close_from_new_process(status)
            else:
                self._call(Close(self._key, status))
            self._closed = True
        except Exception:
            if status == "FINISHED":
                raise

    def _close_from_new_process(self, status: str) -> None:
        """The study's run and its trial runs, left RUNNING by a process that died, ended from a new one."""
        self._process = _process()
        self._call(self._opening)
        self._call(Close(self._key, status, sweep=True))

    def _call(self, request: Request) -> str | None:
        if self._closed:
            raise TrackingError("the study's MLflow tracking was closed")
        return self._process.call(request)
