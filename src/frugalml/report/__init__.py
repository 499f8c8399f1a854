"""Reports: a pure data step (``get_*_info`` → NamedTuples of DataFrames) and drawing
steps (offline HTML with plotly, PNG with matplotlib).

Example:
    >>> from frugalml.report import write_report
    >>> write_report("studies/demo", "studies/demo/report")   # doctest: +SKIP
"""

from frugalml.report._info import (
    CURVE_METRICS,
    EFFECT_METRICS,
    CurvesInfo,
    EffectsInfo,
    ParetoInfo,
    ReportInfo,
    WorkloadInfo,
    compute_rows,
    get_curves_info,
    get_effects_info,
    get_pareto_info,
    get_report_info,
    pareto_front,
    trials_frame,
    windows_frame,
)
from frugalml.report._compare import COMPARED, compare_studies
from frugalml.report._write import ReportFiles, write_report

__all__ = [
    "COMPARED",
    "CURVE_METRICS",
    "CurvesInfo",
    "EFFECT_METRICS",
    "EffectsInfo",
    "ParetoInfo",
    "ReportFiles",
    "ReportInfo",
    "WorkloadInfo",
    "compare_studies",
    "compute_rows",
    "get_curves_info",
    "get_effects_info",
    "get_pareto_info",
    "get_report_info",
    "pareto_front",
    "trials_frame",
    "windows_frame",
    "write_report",
]
