"""``frugalml check``: a CI gate on quality and system cost, with exit codes."""

from __future__ import annotations

import argparse
import math
import os

from frugalml.exceptions import ConfigError
from frugalml.ownership import STUDIES_ROOT

EPILOG = """exit status: 0 no regression, 1 a regression or a broken SLO, 2 a usage error.
Thresholds: a [gate] table in --gate FILE (see docs/gate.md); without one every metric both sides
measured is compared with the default tolerances."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check", help="gate a candidate model against a baseline on quality and system cost (exit 1: regression)",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidate", nargs="?", help="a study directory (its best feasible config) or a model URI")
    parser.add_argument("--baseline", help="a model URI (e.g. models:/NAME@champion) or a study")
    parser.add_argument("--live", metavar="URL",
                        help="instead of a candidate and a baseline: the challenger (candidate) and champion "
                             "(baseline) of the server at URL, compared on its live traffic (GET URL/challenger)")
    parser.add_argument("--min-agreement", type=float, default=0.95, metavar="SHARE",
                        help="with --live: the least share of rows on which both versions agree (default 0.95)")
    parser.add_argument("--min-requests", type=int, default=100, metavar="N",
                        help="with --live: compared requests needed for a verdict (default 100)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="where models:/ URIs are registered (default $MLFLOW_TRACKING_URI)")
    parser.add_argument("--gate", metavar="TOML", help="a file with a [gate] table of thresholds")
    parser.add_argument("--workload", help="which workload of a study with several")
    parser.add_argument("--root", default=STUDIES_ROOT, help="where study names are looked up")
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    parser.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report (one test per metric)")
    parser.add_argument("--markdown", metavar="FILE", help="also write a Markdown summary for a pull request")
    parser.set_defaults(func=run_check)


def _target(value: str, root: str) -> str:
    from pathlib import Path

    if value.startswith(("models:/", "runs:/")) or Path(value).exists():
        return value
    named = Path(root) / value
    return str(named) if (named / "frugalml.db").is_file() else value


def run_check(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from frugalml.cli._format import wide_console
    from frugalml.files import write_atomic
    from frugalml.gate import GateSettings, check, load_gate

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    settings = load_gate(args.gate) if args.gate else GateSettings()
    if args.live is not None:
        from frugalml.gate import live_check

        if args.candidate or args.baseline:
            raise ConfigError("--live compares the server's challenger with its champion; leave out the candidate "
                              "and --baseline.")
        result = live_check(args.live, settings, min_agreement=args.min_agreement, min_requests=args.min_requests)
    elif not (args.candidate and args.baseline):
        raise ConfigError("frugalml check needs a candidate and --baseline (or --live URL of a server with a "
                          "challenger).")
    else:
        result = check(_target(args.candidate, args.root), _target(args.baseline, args.root), settings=settings,
                       tracking_uri=args.tracking_uri, workload=args.workload)
    for path, text in ((args.json, result.to_json), (args.junit, result.to_junit),
                       (args.markdown, result.to_markdown)):
        if path:
            write_atomic(path, text())
    console = wide_console()
    table = Table(title=escape(f"candidate {result.candidate}  vs  baseline {result.baseline}"))
    for column in ("metric", "baseline", "candidate", "ratio", "verdict"):
        table.add_column(column, justify="right" if column in ("baseline", "candidate", "ratio") else "left")
    styles = {"regression": "bold red", "improved": "green"}
    for m in result.metrics:
        ratio = f"{m.ratio:.3f}" if math.isfinite(m.ratio) else "-"
        table.add_row(m.metric, f"{m.baseline:.4g}", f"{m.candidate:.4g}", ratio,
                      f"[{styles.get(m.status, '')}]{m.status}[/]: {escape(m.reason)}" if m.status in styles else
                      f"{m.status}: {escape(m.reason)}")  # a reason's "[study]" or "[deploy]" is text, not markup
    console.print(table)
    if result.not_measured:
        console.print(f"not measured on both sides: {', '.join(result.not_measured)}")
    for note in result.notes:
        console.print(note, markup=False)
    for slo in result.slo:
        console.print(f"SLO {'[bold red]broken[/]' if slo.broken else 'met'}: {escape(slo.line)}")
    console.print(f"verdict: {'[bold green]PASS' if result.passed else '[bold red]' + result.verdict.upper()}[/] "
                  f"({result.confidence:.0%} one-sided confidence)")
    return 0 if result.passed else 1
