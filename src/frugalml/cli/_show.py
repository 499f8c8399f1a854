"""``frugalml list`` and ``frugalml show``: tables of studies and trials."""

from __future__ import annotations

import argparse
import unicodedata
from pathlib import Path

from rich.table import Table

from frugalml.accounting import UNKNOWN
from frugalml.budgets import SERVING_METRICS
from frugalml.cli._format import compute_line, fmt, to_csv, to_json, trial_rows, wide_console
from frugalml.exceptions import StoreError
from frugalml.metrics import (ACCURACY, MEAN_STEP_MS, MODEL_MB, PEAK_MEMORY_MB, PREDICT_MEMORY_MB, PREDICT_MS, RMSE,
                              THROUGHPUT_ROWS_S, VAL_LOSS)
from frugalml.records import is_estimate
from frugalml.store import ResultStore, find_stores
from frugalml.ownership import STUDIES_ROOT

FORMATS = ("table", "json", "csv")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    listing = subparsers.add_parser("list", help="list the studies under a folder")
    listing.add_argument("--root", default=STUDIES_ROOT, help=f"folder holding study directories (default: {STUDIES_ROOT})")
    listing.add_argument("--format", choices=FORMATS, default="table")
    listing.set_defaults(func=run_list)
    show = subparsers.add_parser("show", help="show a study's trials")
    show.add_argument("study", help="a study name (under --root) or a study directory")
    show.add_argument("--root", default=STUDIES_ROOT)
    show.add_argument("--format", choices=FORMATS, default="table")
    show.set_defaults(func=run_show)


def study_directory(study: str, root: str) -> Path:
    """A study given by name (under ``root``) or by directory."""
    for candidate in (Path(study), Path(root) / study):
        if ResultStore(candidate).exists:
            return candidate
    stores = find_stores(root)
    wanted = unicodedata.normalize("NFC", study)  # "ü" typed as u + combining diaeresis (macOS) is the same name
    for store in stores:
        if unicodedata.normalize("NFC", store.name) == wanted:
            return store
    if Path(study).is_dir():
        raise StoreError(f"{study} is a folder but holds no study (no frugalml.db); pass a study's folder, or the "
                         f"name of one in {root}/.")
    known = ", ".join(p.name for p in stores) or "none"
    raise StoreError(f"No study '{study}' in {root}/ (known: {known}); pass a study name or directory.")


def run_list(args: argparse.Namespace) -> int:
    from frugalml.results import compute_account
    from frugalml.tuner import load_result

    root = Path(args.root)
    if not root.is_dir() and (root.exists() or args.root != STUDIES_ROOT):  # the default may not exist yet
        raise StoreError(f"--root {args.root} is not a folder; pass the folder that holds your study directories.")
    rows = []
    for directory in find_stores(args.root):
        result = load_result(directory)
        account = compute_account(result.records)
        best = result.best_feasible()
        rows.append(
            {
                "study": result.name, "directory": str(directory), "trials": account.trials,
                "stopped": account.stopped, "failed": account.failed,
                "best_feasible": best.config_id if best else None,
                "used_cpu_s": round(account.used_cpu_s, 2), "saved_cpu_s": round(account.saved_cpu_s, 2),
            }
        )
    if args.format == "json":
        print(to_json(rows))
    elif args.format == "csv":
        print(to_csv(rows), end="")
    else:
        table = Table(title=f"studies in {args.root}/")
        for column in ("study", "trials", "stopped", "failed", "best_feasible", "used_cpu_s", "saved_cpu_s"):
            table.add_column(column)
        for row in rows:
            table.add_row(*(fmt(row[c]) for c in ("study", "trials", "stopped", "failed", "best_feasible",
                                                   "used_cpu_s", "saved_cpu_s")))
        wide_console().print(table)
    return 0


def _saved(value: float | None, basis: str | None, source: str | None = None) -> str:
    """A saved figure, or ``unknown`` where its basis is (never a number then)."""
    if basis == UNKNOWN:
        return UNKNOWN
    return _joules(value, source) if source is not None else fmt(value, 3)


def _joules(value: float | None, source: str | None) -> str:
    """Joules with ``~`` in front of an estimate, so it is never read as a measurement."""
    if value is None:
        return "-"
    return ("~" if is_estimate(source) else "") + fmt(value, 3)


SERVING_COLUMNS = {PREDICT_MS: "predict ms", THROUGHPUT_ROWS_S: "rows/s", MODEL_MB: "model MB",
                   PREDICT_MEMORY_MB: "serve MB"}


def run_show(args: argparse.Namespace) -> int:
    from frugalml.results import compute_account
    from frugalml.tuner import load_result

    result = load_result(study_directory(args.study, args.root))
    rows = trial_rows(result.records)
    if args.format == "json":
        print(to_json(rows))
        return 0
    if args.format == "csv":
        print(to_csv(rows), end="")
        return 0
    console = wide_console()
    table = Table(title=f"study {result.name}")
    params = sorted({k for r in result.records for k in r.params})
    serving = [m for m in SERVING_METRICS if any(row[m] is not None for row in rows)]  # with serving budgets
    columns = ["#", "workload", *params, "rep", "status", "stop", "val_loss", "acc/rmse", "step ms", "mem MB",
               *(SERVING_COLUMNS[m] for m in serving), "cpu-s", "saved cpu-s", "saved from", "J", "saved J"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for record, row in zip(result.records, rows):
        quality = row[ACCURACY] if row[ACCURACY] is not None else row[RMSE]
        table.add_row(
            str(record.number), record.workload, *(fmt(record.params.get(p)) for p in params), str(record.repeat),
            record.status.value, row["stop_reason"] or "-", fmt(row[VAL_LOSS]), fmt(quality),  # folded, not cut
            fmt(row[MEAN_STEP_MS], 3), fmt(row[PEAK_MEMORY_MB], 4), *(fmt(row[m], 3) for m in serving),
            fmt(record.cpu_s, 3),
            _saved(row["cpu_s_saved"], record.saved_basis), record.saved_basis or "-",
            _joules(record.energy_j, record.energy_source),
            _saved(record.energy_j_saved, record.saved_basis, record.energy_source),
        )
    console.print(table)
    best = result.best_feasible()
    console.print(f"best feasible: {best.workload} {best.config_id}" if best else "best feasible: none")
    console.print(compute_line(compute_account(result.records)), markup=False)  # "[rule x]" is not markup
    return 0
