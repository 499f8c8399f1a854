"""``frugalml reproduce thesis``: run the design, then report and judge the findings."""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import pandas as pd

from frugalml.exceptions import ConfigError, StoreError
from frugalml.executors import shared_connection
from frugalml.ownership import remove_owned
from frugalml.records import TrialRecord, TrialStatus
from frugalml.report import trials_frame, windows_frame, write_report
from frugalml.reproduce._design import (
    MEMORY_BUDGET_MB, design, expected_seconds, resolve_wave_energy, thesis_studies, workload_meta,
)
from frugalml.reproduce._findings import THESIS_NUMBERS, Finding, thesis_findings
from frugalml.store import RUN_LOCK_FILE, ResultStore
from frugalml.study import Study
from frugalml.tuner import tune

Printer = Callable[[str], None]


class ThesisRun(NamedTuple):
    out: Path
    findings: list[Finding]
    seconds: float
    substitute_note: str | None
    summary_path: Path
    report_path: Path


class WorkloadProgress(NamedTuple):
    """How far one workload of a stored study is."""

    study: str
    workload: str
    done: int
    planned: int

    @property
    def left(self) -> int:
        return max(0, self.planned - self.done)

    def __str__(self) -> str:
        return f"{self.study} {self.workload}: {self.done}/{self.planned} trials done, {self.left} left"


def resume_progress(study: Study) -> list[WorkloadProgress]:
    """Per workload: trials already in the study's store, and trials planned (the grid's
    configurations x repeats; ``n_trials`` x repeats for other searches). A configuration
    with a skipped trial counts as all its repeats done, as the tuner treats it."""
    store = ResultStore(study.path)
    records = store.trials(with_steps=False) if store.exists else []
    configs = len(study.search.sampler()) if study.search.method == "grid" else study.search.n_trials or 0
    progress = []
    for workload in study.workloads:
        by_config: dict[str, list[TrialRecord]] = {}
        for record in records:
            if record.workload == workload.name:
                by_config.setdefault(record.config_id, []).append(record)
        done = sum(study.repeats if any(r.status is TrialStatus.SKIPPED for r in group)
                   else min(len(group), study.repeats) for group in by_config.values())
        progress.append(WorkloadProgress(study.name, workload.name, done, configs * study.repeats))
    return progress


def _echo_progress(progress: list[WorkloadProgress], echo: Printer) -> None:
    """Before a resumed run: per workload, how many trials are done and how many are left."""
    done, planned = sum(p.done for p in progress), sum(p.planned for p in progress)
    echo(f"resuming: {done}/{planned} trials done, {planned - done} left (stored trials are kept, not re-run)")
    for item in progress:
        echo(f"  {item}")


def findings_frame(records: list[TrialRecord], study: Study) -> pd.DataFrame:
    """The main study's windows with each workload's dataset, data path and size class."""
    windows = windows_frame(records)
    meta = workload_meta(study)
    for column in ("dataset", "data_format", "large"):
        windows[column] = windows["workload"].map(lambda w, c=column: meta.get(w, {}).get(c))
    windows["large"] = windows["large"].astype(bool)
    return windows


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import sklearn

    return (f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} logical CPUs visible, "
            f"Python {platform.python_version()}, scikit-learn {sklearn.__version__}")


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.1f} min"


def summary_markdown(findings: list[Finding], *, quick: bool, seconds: float, machine: str,
                     substitute_note: str | None, figures: list[str], trials: int, trial_seconds: float,
                     workers: int) -> str:
    """FINDINGS.md. ``seconds``: this invocation; ``trial_seconds``: the sum of the ``trials`` stored
    trials' wall times, which a run resumed across sessions still adds up."""
    per_worker = "" if workers == 1 else f", about {_duration(trial_seconds / workers)} elapsed on {workers} workers"
    lines = [f"# Thesis findings on this machine ({'quick' if quick else 'full'} reproduction)", "",
             f"Machine: {machine}. Trial time: {_duration(trial_seconds)}, the sum of the {trials} stored trials' "
             f"wall times, across every resumed session{per_worker}. This invocation: {_duration(seconds)} "
             "(its runs and the report).", ""]
    if substitute_note:
        lines += [f"> **Substitute dataset.** {substitute_note}", ""]
    if quick:
        lines += ["Quick design: batch {30, 300, 3000, 30000} x learning rate {0.01, 0.0001}, 2 repeats, "
                  "steps capped (mnist_784: 24 steps, windows of 6; others: 200 steps, windows of 50). "
                  "The full design (`frugalml reproduce thesis`) runs 4 learning rates, 3 repeats, "
                  "1000 steps with windows of 100.", ""]
    lines += ["| # | finding | verdict | evidence |", "|---|---|---|---|"]
    for number, finding in enumerate(findings, start=1):
        label = THESIS_NUMBERS.get(finding.key, number)
        lines.append(f"| {label} | {finding.claim} | **{finding.verdict.value}** | {finding.evidence} |")
    lines += ["", "Each verdict is a pure function of the measured data (`frugalml.reproduce.thesis_findings`); "
              "the thresholds are in its docstrings.", "", "## Figures", ""]
    lines += [f"- [{Path(f).name}]({f})" for f in figures]
    lines += ["", "Interactive charts of every workload: [report.html](report.html)."]
    return "\n".join(lines) + "\n"


def _check_fresh_start(studies: tuple[Study, ...], resume: bool, fresh: bool) -> None:
    if resume and fresh:
        raise ConfigError("Pass either --resume (continue) or --fresh (start over), not both.")
    if resume or fresh:
        return
    for study in studies:
        store = ResultStore(study.path)
        if store.exists and store.trial_ids():
            raise StoreError(f"{study.path} already holds results; pass --resume to continue or --fresh to start over.")


def _start_over(studies: tuple[Study, ...]) -> None:
    """``--fresh``: every study of the design cleared before the first one runs (each ``tune`` would clear
    only its own, when it starts): a fresh run interrupted early left the previous run's later studies,
    which ``--resume`` then took for its own. Only what frugalml wrote goes; a study another process is
    running is refused first."""
    stores = [ResultStore(study.path) for study in studies]
    with contextlib.ExitStack() as locks:
        for store in stores:  # every lock first: one held by another run refuses before anything is cleared
            if store.exists:
                locks.enter_context(store.run_lock())
        for store in stores:
            if store.exists:
                remove_owned(store.directory, keep=frozenset({RUN_LOCK_FILE}))


def on_backend(study: Study, backend: str = "local", address: str | None = None) -> Study:
    """``study`` run on ``backend`` (``ray``: at ``address``, or a local Ray); a one-line
    error for a bad pair, before anything runs. Where trials run is not part of what a
    study is: a reproduction started locally resumes on a cluster, and back."""
    return dataclasses.replace(study, backend=backend, address=address)


def run_thesis(out: str | Path, *, quick: bool = False, resume: bool = False, fresh: bool = False,
               workers: int = 2, data_dir: str | None = None, echo: Printer = print, backend: str = "local",
               address: str | None = None) -> ThesisRun:
    """Run the thesis design into ``out``, write the report and the findings summary;
    ``backend = "ray"`` runs the trials on a Ray cluster (``address``).

    Example:
        >>> run = run_thesis("docs/thesis-quick", quick=True)     # doctest: +SKIP
        >>> [f.verdict.value for f in run.findings]               # doctest: +SKIP
    """
    started = time.monotonic()
    out = Path(out)
    wave_energy, note = resolve_wave_energy(data_dir)
    plan = design(quick, workers)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; --out needs a folder for the studies and the report. Choose another.")
    studies = tuple(on_backend(s, backend, address) for s in thesis_studies(out, plan, wave_energy, data_dir))
    _check_fresh_start(studies, resume, fresh)  # a mistake is the one line printed, before any note
    if fresh:
        _start_over(studies)
    if note:
        echo(f"NOTE: {note}")
    trials = sum(len(s.workloads) * len(s.search.space['batch_size']) * len(plan.learning_rates) * s.repeats
                 for s in studies)
    echo(f"{'quick' if quick else 'full'} thesis design: {trials} trials in {len(studies)} studies under {out}; "
         f"expected time ~{expected_seconds(studies) / 60:.0f} min on {workers} workers"
         + ("" if quick else " (rough model; interrupt any time and continue with --resume)"))
    stored = {study.name: resume_progress(study) for study in studies} if resume else {}
    if resume:
        _echo_progress([item for items in stored.values() for item in items], echo)
    results = []
    with shared_connection(backend, address, workers):
        for study in studies:
            done = [sum(item.done for item in stored.get(study.name, ()))]  # resumed trials count on from there

            def progress(event: str, payload: Any, study: Study = study, done: list[int] = done) -> None:
                if event == "end":
                    done[0] += 1
                    why = f" ({payload.stop.rule})" if payload.stop else ""
                    echo(f"[{time.monotonic() - started:6.0f}s] {study.name} #{done[0]} {payload.trial_id}: "
                         f"{payload.status.value}{why}")

            results.append(tune(study, resume=resume, fresh=fresh, progress=progress))
    main, budget = results
    windows = findings_frame(list(main.records), studies[0])
    findings = thesis_findings(windows, trials_frame(list(budget.records)), MEMORY_BUDGET_MB)
    preamble = "".join(
        [f'<div class="note">{html.escape(note)}</div>' if note else "", "<h1>Thesis findings on this machine</h1><table>"
         "<tr><th>finding</th><th>verdict</th><th>evidence</th></tr>"]
        + [f"<tr><td>{html.escape(f.claim)}</td><td><b>{f.verdict.value}</b></td><td>{html.escape(f.evidence)}</td></tr>"
           for f in findings] + ["</table>"])
    files = write_report([s.path for s in studies], out, title="frugalml: thesis reproduction", preamble=preamble)
    figures = [str(p.relative_to(out)) for p in files.figures]
    seconds = time.monotonic() - started
    records = [r for result in results for r in result.records]
    text = summary_markdown(findings, quick=quick, seconds=seconds, machine=_machine(), substitute_note=note,
                            figures=figures, trials=len(records), trial_seconds=sum(r.wall_s for r in records),
                            workers=workers)
    summary_path = out / "FINDINGS.md"
    summary_path.write_text(text)
    (out / "findings.json").write_text(json.dumps(
        [{"key": f.key, "claim": f.claim, "verdict": f.verdict.value, "evidence": f.evidence, "numbers": f.numbers}
         for f in findings], indent=2, default=str))
    echo("")
    for number, finding in enumerate(findings, start=1):
        label = THESIS_NUMBERS.get(finding.key, number)
        echo(f"{label}. {finding.claim}\n   → {finding.verdict.value.upper()}: {finding.evidence}")
    echo(f"\nsummary: {summary_path}   report: {files.html}   ({seconds / 60:.1f} min)")
    return ThesisRun(out, findings, seconds, note, summary_path, files.html)
