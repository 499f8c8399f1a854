"""Reproduce the thesis, and its draft's architecture search: each design as frugalml
studies, each finding a pure function of the measured data (verdict: holds / does not
hold / inconclusive).

Example:
    >>> from frugalml.reproduce import run_thesis
    >>> run = run_thesis("docs/thesis-quick", quick=True)   # doctest: +SKIP
"""

from frugalml.reproduce._design import MEMORY_BUDGET_MB, Design, design, expected_seconds, thesis_studies
from frugalml.reproduce._findings import (
    THESIS_NUMBERS,
    Finding,
    Verdict,
    batch_effects,
    eta_squared,
    finding_batch_memory,
    finding_batch_step_time,
    finding_cpu_uninformative,
    finding_learning_rate_no_effect,
    finding_level_within_run,
    finding_memory_budget_in_range,
    finding_memory_budget_thesis,
    finding_memory_rises_then_levels,
    simulate_memory_budget,
    thesis_findings,
)
from frugalml.reproduce._nas import NasDesign, NasRun, held_out_errors, in_range_budget, nas_design, nas_findings, run_nas
from frugalml.reproduce._prediction import (
    ErrorRow, cross_config_errors, evaluate_prediction, in_trial_errors, learning_rate_effect,
)
from frugalml.reproduce._run import (
    ThesisRun, WorkloadProgress, findings_frame, resume_progress, run_thesis, summary_markdown,
)

__all__ = [
    "Design",
    "ErrorRow",
    "Finding",
    "MEMORY_BUDGET_MB",
    "NasDesign",
    "NasRun",
    "THESIS_NUMBERS",
    "ThesisRun",
    "Verdict",
    "WorkloadProgress",
    "batch_effects",
    "cross_config_errors",
    "design",
    "eta_squared",
    "evaluate_prediction",
    "expected_seconds",
    "finding_batch_memory",
    "finding_batch_step_time",
    "finding_cpu_uninformative",
    "finding_learning_rate_no_effect",
    "finding_level_within_run",
    "finding_memory_budget_in_range",
    "finding_memory_budget_thesis",
    "finding_memory_rises_then_levels",
    "findings_frame",
    "held_out_errors",
    "in_range_budget",
    "in_trial_errors",
    "learning_rate_effect",
    "nas_design",
    "nas_findings",
    "resume_progress",
    "run_nas",
    "run_thesis",
    "simulate_memory_budget",
    "summary_markdown",
    "thesis_findings",
    "thesis_studies",
]
