"""``frugalml evaluate-prediction``: how well frugalml predicts cost on the thesis workloads."""

from __future__ import annotations

import argparse
from typing import Any

from frugalml.cli._format import to_json

COLUMNS = ("k=1", "k=2", "k=5", "leave config out", "leave batch out", "lr effect", "batch effect")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate-prediction",
        help="run the thesis grid and print the error of in-trial and cross-configuration cost prediction",
    )
    parser.add_argument("--quick", action="store_true", help="a small grid on two small workloads (about a minute)")
    parser.add_argument("--workloads", nargs="+", metavar="DATASET",
                        help="mnist_784, diabetes, red_wine, casp_protein (default: all four; --quick: two)")
    parser.add_argument("--workers", type=int, default=2, help="trials run at once (default 2)")
    parser.add_argument("--confidence", type=float, default=0.9, help="confidence of the predicted bounds")
    parser.add_argument("--directory", help="keep the trials in this study directory (default: a temporary one)")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.set_defaults(func=run)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def table_rows(rows: list[Any], labels: dict[str, str]) -> list[dict[str, str]]:
    """One printed row per (workload, metric): median |error| per predictor."""
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for row in rows:
        key = (labels.get(row.workload, row.workload), row.metric)
        entry = cells.setdefault(key, {"workload": key[0], "metric": key[1]})
        if row.predictor == "batch effect":
            entry[row.predictor] = "-" if row.value is None else f"x{row.value:.3g}"
            continue
        entry[row.predictor] = _pct(row.value) + (f" (n={row.n})" if row.predictor == "k=2" else "")
        if row.predictor == "k=2":
            entry["in band k=2"] = _pct(row.coverage)
    return list(cells.values())


def run(args: argparse.Namespace) -> int:
    from frugalml.prediction import check_confidence
    from frugalml.reproduce import evaluate_prediction

    check_confidence("evaluate-prediction", args.confidence)
    rows, labels = evaluate_prediction(args.workloads, quick=args.quick, workers=args.workers,
                                       directory=args.directory, confidence=args.confidence)
    if args.format == "json":
        print(to_json([{**row._asdict(), "label": labels.get(row.workload)} for row in rows]))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="prediction error: median |predicted / measured - 1|")
    columns = ("workload", "metric", *COLUMNS[:3], "in band k=2", *COLUMNS[3:])
    for column in columns:
        table.add_column(column, overflow="fold")
    for entry in table_rows(rows, labels):
        table.add_row(*(entry.get(c, "-") for c in columns))
    console = Console(width=180)
    console.print(table)
    console.print(
        "k=N: from a trial's first N windows, its mean step time and peak memory (target: <= 10% at k=2); "
        f"in band: measured inside the {args.confidence:.0%} one-sided bounds; leave config/batch out: the cost "
        "model fitted on the other configurations (steady step time, peak memory); lr effect: spread of the "
        "costs across learning rates at one batch size; batch effect: costliest / cheapest batch size."
    )
    return 0
