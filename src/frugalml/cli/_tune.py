"""``frugalml tune STUDY_FILE``: run a study with a live progress display."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
import time
from collections import Counter
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from frugalml.budgets import budget_of_rule
from frugalml.cli._format import compute_line, fmt, wide_console
from frugalml.exceptions import one_line
from frugalml.records import TrialRecord, TrialStatus


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tune", help="run (or resume) a study from a TOML file")
    parser.add_argument("study_file", help="the study's TOML file")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted study")
    parser.add_argument("--fresh", action="store_true", help="delete earlier results of this study first")
    parser.add_argument("--workers", type=int, help="override [study] workers")
    parser.add_argument("--directory", help="override where results go (default studies/<name>)")
    parser.add_argument("--backend", choices=["local", "ray"], help="override [study] backend")
    parser.add_argument("--address", help="Ray cluster address (with --backend ray)")
    parser.add_argument("--no-progress", action="store_true", help="print one line per trial instead")
    parser.set_defaults(func=run)


class ProgressView:
    """Counts of done/running/stopped trials and the best feasible so far."""

    def __init__(self, study: Any) -> None:
        self.study = study
        self.running: dict[str, Any] = {}
        self.records: list[TrialRecord] = []
        self.started = time.monotonic()

    def __call__(self, event: str, payload: Any) -> None:
        if event == "start":
            self.running[payload.trial_id] = payload
        else:
            self.running.pop(payload.trial_id, None)
            self.records.append(payload)

    def line(self, record: TrialRecord) -> str:
        why = f" ({record.stop.message})" if record.stop else f" ({record.error})" if record.error else ""
        return f"trial {record.number} {record.trial_id}: {record.status.value}{why}"

    def __rich__(self) -> Group:
        counts = {s: sum(r.status is s for r in self.records) for s in TrialStatus}
        header = (
            f"[bold]{self.study.name}[/]  {time.monotonic() - self.started:.0f}s  "
            f"done {counts[TrialStatus.COMPLETED]}  running {len(self.running)}  "
            f"stopped {counts[TrialStatus.STOPPED]}  failed {counts[TrialStatus.FAILED]}"
        )
        from frugalml.results import best_feasible

        best = best_feasible(self.records, self.study.search)
        best_line = f"best feasible so far: {best.workload} {best.config_id} " + (
            f"({self.study.search.objectives[0]}={fmt(best.objective[0])})" if best else ""
        ) if best else "best feasible so far: none yet"
        table = Table(box=None, show_header=True)
        for column in ("#", "running trial"):
            table.add_column(column)
        for task in self.running.values():
            table.add_row(str(task.number), task.trial_id)
        return Group(header, best_line, table)


def importable_beside(study_file: str) -> None:
    """A training function's module (``train = "mytrain:train"``) is found beside the study file and in
    the working folder, as ``python -m`` finds a script's: appended to ``sys.path``, after the installed
    packages, which the workers' forkserver takes with it."""
    for folder in (os.path.dirname(os.path.abspath(study_file)), os.getcwd()):
        if folder not in sys.path:
            sys.path.append(folder)


def run(args: argparse.Namespace) -> int:
    from frugalml.study import load_study
    from frugalml.tuner import tune

    importable_beside(args.study_file)
    study = load_study(args.study_file)
    overrides = {"workers": args.workers, "directory": args.directory, "backend": args.backend, "address": args.address}
    if overrides := {k: v for k, v in overrides.items() if v is not None}:
        study = dataclasses.replace(study, **overrides)  # re-validated as a whole
    console = wide_console()
    view = ProgressView(study)
    live = not args.no_progress and console.is_terminal

    def progress(event: str, payload: Any) -> None:
        view(event, payload)
        if event == "end" and not live:
            print(view.line(payload), flush=True)

    if live:
        with Live(view, console=console, refresh_per_second=4, transient=True):
            result = tune(study, resume=args.resume, fresh=args.fresh, progress=progress)
        for record in result.records[-len(view.records):] if view.records else ():
            console.print(view.line(record))
    else:
        result = tune(study, resume=args.resume, fresh=args.fresh, progress=progress)
    for workload in study.workloads:
        best = result.best_feasible(workload.name)
        if best is None:
            feasible = any(s.workload == workload.name and s.feasible for s in result.summaries())
            objective = study.search.objectives[0]
            console.print(f"[bold]{workload.name}[/]: " + (
                f"no configuration reported {objective}, the objective (trial.report({objective}=...))"
                if feasible else escape(_none_met([r for r in result.records if r.workload == workload.name]))))
            continue
        metrics = ", ".join(f"{k}={fmt(v)}" for k, v in best.mean.items())
        console.print(f"[bold]{workload.name}[/]: best configuration within budget: {dict(best.params)} ({metrics})")
    account = result.compute()
    console.print(compute_line(account), markup=False)  # "[rule x, ...]" is not rich markup
    if account.saved_by_mechanism:
        console.print("saved by mechanism: " + ", ".join(
            f"{how} {account.shown(how, cpu)}" + ("" if how in account.unknown else " CPU-s")
            for how, cpu in sorted(account.saved_by_mechanism.items())))
    if result.compute_budget_cpu_s is not None:  # budgeted mode: the best found within B CPU-seconds
        ended = "; the compute budget ended the search" if result.budget_exhausted else ""
        console.print(f"budgeted mode: used {account.used_cpu_s:.1f} of {result.compute_budget_cpu_s:g} "
                      f"CPU-s{ended}; the best configurations above are the best found within it")
    console.print(f"results: {result.directory}")
    return _all_failed(result.records)


def _none_met(records: Any) -> str:
    """Why no configuration of a workload met the budget: the trials failed, or which budgets stopped them."""
    if records and all(r.status is TrialStatus.FAILED for r in records):
        reason, count = _common_failure(records)
        share = "all" if count == len(records) else count
        return f"no configuration finished: every trial failed, {share} with: {reason}"
    stops: dict[str, list[Any]] = {}
    for record in records:  # a budget's stops (not a GPU running out of memory with no budget set: no threshold)
        stop = record.stop
        if stop is not None and stop.is_system and math.isfinite(stop.threshold) and math.isfinite(stop.value):
            stops.setdefault(stop.rule, []).append(stop)
    if not stops:
        return "no configuration met the budget"
    said = ", ".join(f"{_budget_key(rule)} = {min(s.threshold for s in found):g} {_ruled_out(rule)} {len(found)} of "
                     f"{len(records)} (the lowest reading {min(s.value for s in found):.4g})"
                     for rule, found in sorted(stops.items()))
    return f"no configuration met the budget: {said}"


def _budget_key(rule: str) -> str:
    """The key the user wrote for a stop's rule (``skipped_max_predict_ms``: ``max_predict_ms``)."""
    budget = budget_of_rule(rule)
    return budget.key if budget is not None else rule


def _ruled_out(rule: str) -> str:
    return "skipped" if rule.startswith("skipped_") else "stopped (predicted)" if rule.startswith("predicted_") \
        else "stopped"


def _all_failed(records: Any) -> int:
    """1, with the most common reason on stderr, when every trial failed (a bug, not a budget); else 0."""
    if not records or any(record.status is not TrialStatus.FAILED for record in records):
        return 0
    reason, count = _common_failure(records)
    same = "every one" if count == len(records) else f"{count} of them"
    print(f"frugalml: error: all {len(records)} trials failed, {same} with: {reason}", file=sys.stderr)
    return 1


def _common_failure(records: Any) -> tuple[str, int]:
    """The most common failure of ``records`` in one line, with where its first trial raised it, and how many."""
    reasons = [one_line(record.error or "unknown error", squash=True) for record in records]
    reason, count = Counter(reasons).most_common(1)[0]
    first = records[reasons.index(reason)]
    return reason + _raised_at(first.info.get("traceback", "")), count


def _raised_at(traceback_text: str) -> str:
    """`` (raised at FILE:LINE in FUNCTION)``: the innermost frame of a failed trial's traceback, or ``""``."""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', traceback_text or "")
    if not frames:
        return ""
    path, line, function = frames[-1]
    return f" (raised at {path}:{line} in {function})"


if __name__ == "__main__":
    sys.exit(run(argparse.Namespace()))
