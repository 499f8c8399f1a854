"""Child processes that cannot outlive the process that started them."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.context
import multiprocessing.connection
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import psutil

from frugalml.exceptions import ConfigError

_PR_SET_PDEATHSIG = 1
DRIVER_PID_ENV = "FRUGALML_DRIVER_PID"  # set for a child that must die with the driver before it can ask
ORPHAN_GUARD_MODULE = "frugalml._orphan_guard"  # a forkserver's first preload: it dies with its starter
PRELOAD_MODULE = "frugalml._preload"  # a forkserver's preload that imports what PRELOAD_ENV names
PRELOAD_ENV = "FRUGALML_PRELOAD"  # set while the forkserver starts


def forkserver_running() -> bool:
    """Whether the forkserver this process started is alive, without reaping it (CPython's
    ``ensure_running`` does, before it starts another)."""
    from multiprocessing import forkserver

    pid = forkserver._forkserver._forkserver_pid
    if pid is None or not hasattr(os, "waitid"):
        return False
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        return False


_forkserver_made_for: tuple | None = None  # (preload, modules, ignored signals) of the running forkserver


def use_forkserver(preload: Sequence[str], modules: Sequence[str] = (),
                   ignore: Sequence[signal.Signals] = (signal.SIGINT,)) -> multiprocessing.context.BaseContext:
    """The forkserver context of a forkserver that imported ``preload``, then ``modules`` through
    :data:`PRELOAD_MODULE`, and ignores ``ignore``: the running one if it was made so, else a new
    one. CPython keeps one forkserver a process: one made for other workers (a study's, then a
    server's, in one notebook) is stopped, which ends the workers forked from it that asked to die
    with it; one that died is started again with the same imports (CPython's own restart would
    start it without ``modules``)."""
    global _forkserver_made_for
    context = multiprocessing.get_context("forkserver")
    wanted = (tuple(preload), tuple(modules), tuple(ignore))
    running = forkserver_running()
    if running and _forkserver_made_for == wanted:
        return context
    if running:
        stop_forkserver()
    context.set_forkserver_preload(list(preload))
    _start_forkserver(list(modules), ignore)
    _forkserver_made_for = wanted
    return context


def forkserver_imports() -> tuple[str, ...]:
    """What the running forkserver was started importing: its preload modules, then the modules
    :data:`PRELOAD_MODULE` imported (``()`` when :func:`use_forkserver` started none)."""
    if _forkserver_made_for is None or not forkserver_running():
        return ()
    preload, modules, _ = _forkserver_made_for
    return preload + modules


def stop_forkserver() -> None:
    """Stop this process's forkserver, if it started one (CPython's own way, as its tests do)."""
    global _forkserver_made_for
    from multiprocessing import forkserver

    _forkserver_made_for = None
    if forkserver._forkserver._forkserver_pid is not None:
        with contextlib.suppress(OSError, ChildProcessError):  # already gone and reaped
            forkserver._forkserver._stop()


def _start_forkserver(modules: list[str], ignore: Sequence[signal.Signals] = (signal.SIGINT,)) -> None:
    """Start this process's forkserver (its preload list set before), which imports ``modules``
    through :data:`PRELOAD_MODULE`, with ``ignore`` ignored (the disposition survives its exec).

    CPython's forkserver ignores SIGINT only after its preload imports; a Ctrl-C
    sent to the terminal's process group during those seconds would print a
    traceback from it. Ctrl-C is its starter's to handle. Off the main thread,
    signals cannot be changed, and the forkserver notices its starter's death
    only after its imports, on its pipe (a parent-death signal is tied to the
    thread that started it; :data:`ORPHAN_GUARD_MODULE` asks for one from the main thread).
    """
    from multiprocessing import forkserver

    main = threading.current_thread() is threading.main_thread()
    variables = {PRELOAD_ENV: ",".join(modules)}  # read (and dropped) by the forkserver
    if main:
        variables[DRIVER_PID_ENV] = str(os.getpid())  # frugalml._orphan_guard
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in ignore} if main else {}
    os.environ.update(variables)
    try:
        forkserver.ensure_running()
    except OSError as error:
        if "path too long" not in str(error):
            raise
        import tempfile

        raise ConfigError(f"the temporary folder {tempfile.gettempdir()!r} is too long a path for the Unix socket "
                          "worker processes are started through (108 bytes with the socket's name); set TMPDIR "
                          "to a shorter folder, e.g. TMPDIR=/tmp.") from None
    finally:
        for name in variables:
            os.environ.pop(name, None)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


_interrupts = 0  # SIGINTs taken by interrupt_on_sigint's handler


def interrupt_on_sigint() -> Callable[[], None]:
    """Ctrl-C raises KeyboardInterrupt, as Python's default handler does, and is also counted: one that
    Python swallows, raised inside a weakref callback or a ``__del__`` ("Exception ignored in ..."),
    still ends the run at the next :func:`raise_if_interrupted` (a reproduce run went on for 85 s
    after it). Returns what puts the previous handler back."""
    def handler(signum: int, frame: Any) -> None:
        global _interrupts
        _interrupts += 1
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, previous)


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if Ctrl-C came (see :func:`interrupt_on_sigint`): a loop's safe point."""
    if _interrupts:
        raise KeyboardInterrupt


def die_with_parent(driver_pid: int | None = None) -> None:
    """Ask Linux to SIGKILL this process when the thread that started it dies (a killed driver
    leaves no orphans); elsewhere a no-op.

    The request covers only deaths after it is made, so given ``driver_pid`` (the process this
    one must not outlive: its parent, or further up), this process also kills itself at once if
    that one is already gone.
    """
    _parent_death_signal(signal.SIGKILL)
    if driver_pid is not None and not _alive(driver_pid):
        os.kill(os.getpid(), signal.SIGKILL)


def outlive_parent() -> None:
    """Undo :func:`die_with_parent`'s signal, for a process that notices its driver's death itself
    (a closed socket) and has something to finish first; elsewhere a no-op."""
    _parent_death_signal(0)


def _parent_death_signal(signum: int) -> None:
    """The signal Linux sends this process when the thread that started it dies (0: none); elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)
        except (OSError, AttributeError):
            pass


def _alive(pid: int) -> bool:
    if pid == os.getppid():
        return True
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def exit_with_parent() -> None:
    """In a process started by :mod:`multiprocessing`: exit as soon as its parent process is gone.

    For a child started from any thread of its parent (a process pool's, started on a request's
    thread): the parent-death signal of :func:`die_with_parent` would fire when that thread
    ends. This waits on the parent's sentinel instead, on a daemon thread of the child; a
    no-op where the start method gives no sentinel.
    """
    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return

    def wait() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(0)

    threading.Thread(target=wait, name="frugalml-exit-with-parent", daemon=True).start()
