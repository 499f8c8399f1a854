"""The ``frugalml`` command line: thin wrappers that parse, call the API and print.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``, which
registers the subcommand and sets ``func`` to the function that runs it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sqlite3
import stat
import sys
import threading
import typing

from frugalml.exceptions import FrugalError
from frugalml.files import disk_full_message, is_disk_full, path_in_traceback
from frugalml.processes import interrupt_on_sigint

COMMAND_MODULES = ["frugalml.cli._tune", "frugalml.cli._show", "frugalml.cli._serve", "frugalml.cli._report",
                   "frugalml.cli._evaluate", "frugalml.cli._check",
                   "frugalml.cli._retrain", "frugalml.cli._lineage"]


class _Parser(argparse.ArgumentParser):
    """Command-line mistakes are one line too, pointing at the command's --help."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"frugalml: error: {message} (see `{self.prog} --help`).\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="frugalml", description="Resource-aware hyperparameter tuning: stop trials that break a budget."
    )
    parser.add_argument("--version", action="version", version=f"frugalml {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def _version() -> str:
    from frugalml import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line to stderr and exit 2."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    parser = build_parser()
    args = parser.parse_args(argv)
    restore = interrupt_on_sigint() if threading.current_thread() is threading.main_thread() else (lambda: None)
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # output redirected to a full disk fails here, not unreported at exit
        return status
    except KeyboardInterrupt:
        print("frugalml: interrupted; finished trials are saved (resume with --resume).", file=sys.stderr)
        return 130
    except Exception as error:
        if (message := _user_message(error)) is None:
            raise  # a bug: the traceback is what a report needs
        if is_disk_full(error):
            _drop_pending_output()
            if args.command == "tune":
                message += " `frugalml tune STUDY --resume` then continues the study: its finished trials are kept."
        print(f"frugalml: error: {message}", file=sys.stderr)
        return 2
    finally:
        restore()


def _user_message(error: Exception) -> str | None:
    """The one-line message for an error the user or the machine caused; ``None`` for a bug.

    Beside frugalml's own errors: a full disk or quota anywhere (the results store, MLflow's
    store, a cache, a report), and a database other than the results store (which names its
    own errors) that is locked or damaged.
    """
    if isinstance(error, FrugalError):
        return str(error)
    if isinstance(error, (FileExistsError, NotADirectoryError)) and not is_disk_full(error):
        return (f"{error.filename} is in the way: a file where a folder is needed; "
                "choose another output folder.")
    if is_disk_full(error):
        return disk_full_message(path_in_traceback(error) or _full_stdout(), error)
    if isinstance(error, PermissionError) and error.filename:  # an output folder that is read-only, say
        return (f"cannot write {error.filename}: {error.strerror or 'permission denied'}; choose a folder you can "
                "write to.")
    if isinstance(error, sqlite3.Error):
        text = str(error)
        if "locked" in text or "busy" in text:
            return (f"a database frugalml uses is locked by another process ({text}); run the command again "
                    "once that process has finished.")
        return f"a database frugalml uses failed: {text}."
    return None


def _full_stdout() -> str | None:
    """Where standard output goes, when that is a full disk (``> out.csv`` there), else ``None``.

    A failed write to stdout names no file; the file (or ``/dev/full``) is read back from
    ``/proc`` (Linux; elsewhere the path stays unnamed).
    """
    try:
        fd = sys.stdout.fileno()
        target, info = os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd)
        if stat.S_ISCHR(info.st_mode):
            return target if target == "/dev/full" else None  # the device that is always full
        space = os.fstatvfs(fd)
        return target if stat.S_ISREG(info.st_mode) and space.f_bavail * space.f_frsize < 2**20 else None
    except (OSError, ValueError, AttributeError):  # no fileno (captured output), no /proc
        return None


def _drop_pending_output() -> None:
    """Discard output that a full disk refused: else Python retries it at exit and prints a traceback."""
    try:
        sys.stdout.flush()
    except OSError:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)


if __name__ == "__main__":
    sys.exit(main())
