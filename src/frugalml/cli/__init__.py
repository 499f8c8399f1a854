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
import sys
import typing

from frugalml.exceptions import FrugalError

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
    try:
        return int(args.func(args) or 0)
    except FrugalError as error:
        print(f"frugalml: error: {error}", file=sys.stderr)
        return 2
    except (FileExistsError, NotADirectoryError) as error:
        print(f"frugalml: error: {error.filename} is in the way: a file where a folder is needed; "
              "choose another output folder.", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as error:
        print(f"frugalml: error: a results store (frugalml.db) is unreadable: {error}; "
              "restore it from a copy, or re-run the study with --fresh.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("frugalml: interrupted; finished trials are saved (resume with --resume).", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
