"""``frugalml report``, ``frugalml reproduce`` and ``frugalml compare``."""

from __future__ import annotations

import argparse
from pathlib import Path

from frugalml.cli._format import fmt, to_csv, to_json, wide_console
from frugalml.exceptions import StoreError
from frugalml.validation import POSITIVE_INT, check
from frugalml.ownership import STUDIES_ROOT


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser("report", help="write an offline HTML report and PNG figures of a study")
    report.add_argument("study", help="a study name (under --root) or a study directory")
    report.add_argument("--root", default=STUDIES_ROOT)
    report.add_argument("--out", help="output folder (default: <study>/report)")
    report.add_argument("--no-png", action="store_true", help="skip the PNG figures")
    report.set_defaults(func=run_report)
    reproduce = subparsers.add_parser("reproduce", help="reproduce the thesis's experiments and judge its findings")
    reproduce.add_argument("design", choices=["thesis", "nas"],
                           help="thesis: the SGD grid; nas: MLP architecture search under budgets")
    reproduce.add_argument("--quick", action="store_true", help="small design that finishes in minutes")
    reproduce.add_argument("--out", help="output folder (default: <design>-quick or <design>-full)")
    reproduce.add_argument("--resume", action="store_true", help="continue an interrupted reproduction")
    reproduce.add_argument("--fresh", action="store_true", help="delete earlier results in --out first")
    reproduce.add_argument("--workers", type=int, default=2)
    reproduce.add_argument("--backend", choices=["local", "ray"], default="local",
                           help="where trials run (ray: on a cluster, with --address)")
    reproduce.add_argument("--address", help="Ray cluster address (with --backend ray); default: a local Ray")
    reproduce.set_defaults(func=run_reproduce)
    compare = subparsers.add_parser("compare", help="system metrics of two studies side by side, with ratios")
    compare.add_argument("study_a")
    compare.add_argument("study_b")
    compare.add_argument("--root", default=STUDIES_ROOT)
    compare.add_argument("--by", choices=["config", "params"], default="config",
                         help="match configurations by workload + config id, or by parameters only")
    compare.add_argument("--format", choices=["table", "json", "csv"], default="table")
    compare.set_defaults(func=run_compare)


def run_report(args: argparse.Namespace) -> int:
    from frugalml.cli._show import study_directory
    from frugalml.report import write_report

    files = write_report(study_directory(args.study, args.root), args.out, png=not args.no_png)
    print(f"report: {files.html}")
    print(f"figures: {len(files.figures)} PNG in {files.html.parent / 'figures'}")
    return 0


def run_reproduce(args: argparse.Namespace) -> int:
    from frugalml.reproduce import run_nas, run_thesis

    check("reproduce", "workers", args.workers, POSITIVE_INT)
    out = args.out or f"{args.design}-{'quick' if args.quick else 'full'}"
    run = run_nas if args.design == "nas" else run_thesis
    run(Path(out), quick=args.quick, resume=args.resume, fresh=args.fresh, workers=args.workers,
        backend=args.backend, address=args.address, echo=lambda line: print(line, flush=True))
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from rich.table import Table

    from frugalml.cli._show import study_directory
    from frugalml.report import COMPARED, compare_studies
    from frugalml.tuner import load_result

    a = load_result(study_directory(args.study_a, args.root))
    b = load_result(study_directory(args.study_b, args.root))
    frame = compare_studies(a.records, b.records, by=args.by)
    if frame.empty:
        raise StoreError(f"No configuration of '{a.name}' matches one of '{b.name}'; try --by params.")
    rows = frame.to_dict("records")
    if args.format == "json":
        print(to_json(rows))
    elif args.format == "csv":
        print(to_csv(rows), end="")
    else:
        table = Table(title=f"{a.name} (A) vs {b.name} (B): B/A ratios")
        columns = ["configuration"] + [f"{m} {s}" for m in COMPARED for s in ("A", "B", "B/A")]
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            cells = [str(row["key"])]
            for metric in COMPARED:
                cells += [fmt(row[f"{metric}_a"]), fmt(row[f"{metric}_b"]), fmt(row[f"{metric}_ratio"], 3)]
            table.add_row(*cells)
        wide_console().print(table)
    return 0
