"""``frugalml lineage``: a registered model's data, study, trial, version and alias history."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    lineage = subparsers.add_parser(
        "lineage", help="where a registered model came from: data (DVC revision) -> study -> trial -> model -> aliases")
    lineage.add_argument("model_uri", help="models:/NAME/VERSION or models:/NAME@ALIAS")
    lineage.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                         help="MLflow tracking URI (default $MLFLOW_TRACKING_URI; `frugalml register` prints it)")
    lineage.add_argument("--json", action="store_true", help="print the lineage as JSON")
    lineage.set_defaults(func=run_lineage)


def run_lineage(args: argparse.Namespace) -> int:
    from frugalml.lineage import model_lineage

    found = model_lineage(args.model_uri, args.tracking_uri)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    from frugalml.cli._format import wide_console

    console = wide_console()
    data, tracked = found["data"], found["data"].get("dvc", {})
    dirty = "yes: the data or its .dvc file differed from the commit" if tracked.get("dirty") == "true" else None
    _section(console, "data", {
        "dataset": data.get("dataset"), "path": data.get("path"), "sha256": data.get("sha256"),
        "size_bytes": data.get("size_bytes"), "missing": data.get("missing"),
        "dvc repo": tracked.get("repo"), "dvc path": tracked.get("path"), "dvc file": tracked.get("dvc_file"),
        "dvc rev": tracked.get("rev"), "dvc dirty": dirty, "dvc md5": tracked.get("md5"), "dvc url": tracked.get("url"),
    }, empty="no data file recorded (your own training function read its data, or it predates lineage)")
    _section(console, "study", found["study"])
    trial = found["trial"]
    _section(console, "trial", {**trial, "params": json.dumps(trial["params"]) if trial["params"] else None})
    model = found["model"]
    _section(console, "model", {**model, "aliases": ", ".join(model["aliases"]) or None})
    console.print("[bold]alias history[/]")
    for entry in found["history"] or [{}]:
        if not entry:
            console.print("  none")
            continue
        moved = f"from {entry['previous']} " if entry.get("previous") else ""
        run = f" (run {entry['run_id']})" if entry.get("run_id") else ""
        console.print(f"  {entry.get('at')}  {entry.get('alias')} {moved}-> {entry.get('version')}: "
                      f"{entry.get('reason')}{run}", markup=False, highlight=False)
    return 0


def _section(console: Any, title: str, rows: dict[str, Any], empty: str = "none") -> None:
    shown = {k: v for k, v in rows.items() if v not in (None, "")}
    console.print(f"[bold]{title}[/]")
    if not shown:
        console.print(f"  {empty}")
    width = max(map(len, shown), default=0)
    for key, value in shown.items():
        console.print(f"  {key:<{width}}  {value}", markup=False, highlight=False, soft_wrap=True)
