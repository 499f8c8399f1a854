"""The MLflow tracking process: ``python -m frugalml.tracking._child FD DRIVER_PID``, started by
:mod:`frugalml.tracking._remote`, serving its driver's requests on the socket ``FD``, one
:class:`~frugalml.tracking.MlflowTracker` per study.

While it imports MLflow it dies with its driver (the parent-death signal, where the driver's main
thread started it). Then it notices the driver's death itself, by the socket's end: a study the
driver did not close (it was killed) has its MLflow run ended KILLED, within :data:`CLEANUP_S`,
and the process is gone. If the driver dies while a request still runs, the process exits
:data:`CLEANUP_S` after it noticed (:data:`PARENT_POLL_S`) that it was re-parented; while it exports
a trial's model (imports that hold the GIL), at once, by the parent-death signal again. It leaves
with ``os._exit``: every write is committed by then, and tearing down MLflow's ~2,000 modules
would cost ~0.5 s for nothing.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection

from frugalml.exceptions import one_line
from frugalml.processes import DRIVER_PID_ENV, die_with_parent, outlive_parent
from frugalml.tracking._mlflow import MlflowTracker, TrackingError
from frugalml.tracking._protocol import Close, Done, Failed, LogStudy, LogTrial, Open, Reply, Request, Shutdown

PARENT_POLL_S = 0.1
CLEANUP_S = 0.5  # nothing of a killed driver's lives a second after it


def _serve(connection: Connection, driver: int | None) -> None:
    trackers: dict[str, MlflowTracker] = {}  # of the studies not closed yet, by key
    try:
        while True:
            try:
                request: Request = connection.recv()
            except (EOFError, OSError):  # the driver is gone
                break
            except Exception as error:  # noqa: BLE001 - a request this process cannot unpickle
                connection.send(Failed(one_line(error, typed=True), False))
                continue
            if isinstance(request, Shutdown):
                trackers.clear()
                break
            # exporting a trial's model imports its framework (a dlopen holding the GIL for seconds, past
            # the re-parenting watcher): meanwhile the driver's death kills this process at once again
            exporting = driver is not None and isinstance(request, LogTrial) and request.record.info.get("model")
            if exporting:
                die_with_parent(driver)
            try:
                reply = _handle(request, trackers)
            finally:
                if exporting:
                    outlive_parent()
            connection.send(reply)
    except OSError:  # the reply had no one to go to
        pass
    for tracker in trackers.values():  # a killed driver's studies: as the next open of each would
        try:
            tracker.close("KILLED")
        except Exception:  # noqa: BLE001 - the next open of the study ends it instead
            pass


def _handle(request: Request, trackers: dict[str, MlflowTracker]) -> Reply:
    tracker = trackers.get(request.key)
    try:
        if isinstance(request, Open):
            sys.path[:] = [*request.sys_path, *(p for p in sys.path if p not in request.sys_path)]
            trackers[request.key] = MlflowTracker(request.uri, request.study_name,
                                                  artifact_dir=request.artifact_dir, params=request.params)
        elif isinstance(request, Close):
            if tracker is not None:  # else its opening failed (the driver was told), or it never opened
                if request.sweep:
                    tracker.runs_by_trial()  # ends the trial runs a dead process left RUNNING
                tracker.close(request.status)
                del trackers[request.key]  # after: a FAILED close may follow a FINISHED one that failed
        elif tracker is None:
            raise TrackingError("the study's MLflow run was not opened")
        elif isinstance(request, LogTrial):
            return Done(tracker.log_trial(request.record))
        elif isinstance(request, LogStudy):
            tracker.log_study(request.result)
    except Exception as error:  # noqa: BLE001 - any failure is the driver's to report, in one line
        return Failed(one_line(error), isinstance(error, TrackingError))
    return Done()


def _exit_with(driver: int) -> None:
    """Exit :data:`CLEANUP_S` after ``driver`` is gone (this process was re-parented), whatever it is doing."""
    def watch() -> None:
        while os.getppid() == driver:
            time.sleep(PARENT_POLL_S)
        time.sleep(CLEANUP_S)
        os._exit(0)

    threading.Thread(target=watch, name="frugalml-exit-with-driver", daemon=True).start()


def main() -> None:
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # a background process group's writes to a `stty tostop` terminal
    signalled = os.environ.pop(DRIVER_PID_ENV, None) is not None
    if signalled:
        die_with_parent(int(sys.argv[2]))
    _exit_with(int(sys.argv[2]))
    connection = Connection(int(sys.argv[1]))
    try:
        importlib.import_module("mlflow.tracking")  # now, while the driver still sets its study up
    except ImportError:
        pass  # Open says so, in one line
    outlive_parent()  # from here on the socket's end says the driver is gone, and its runs are ended
    try:
        _serve(connection, int(sys.argv[2]) if signalled else None)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
