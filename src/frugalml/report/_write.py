"""Write a study's report: one offline HTML file and PNG figures."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

from frugalml.report._html import render_html
from frugalml.report._info import ReportInfo, get_report_info
from frugalml.report._png import draw_workload, slug


class ReportFiles(NamedTuple):
    html: Path
    figures: tuple[Path, ...]
    infos: tuple[ReportInfo, ...]


def write_report(studies: str | Path | Sequence[str | Path], out: str | Path | None = None, *,
                 title: str | None = None, preamble: str = "", png: bool = True) -> ReportFiles:
    """Write ``report.html`` and ``figures/*.png`` for one or more study directories.

    Args:
        studies: a study directory (holding ``frugalml.db``) or several (one HTML, a section each).
        out: where to write (default ``<first study>/report``).
        title: the page title. preamble: HTML put before the studies' sections.
        png: also draw the PNG figures.

    Example:
        >>> files = write_report("studies/demo")         # doctest: +SKIP
        >>> files.html                                   # doctest: +SKIP
        PosixPath('studies/demo/report/report.html')
    """
    directories = [Path(studies)] if isinstance(studies, (str, Path)) else [Path(s) for s in studies]
    infos = tuple(get_report_info(d) for d in directories)
    out = Path(out) if out is not None else directories[0] / "report"
    out.mkdir(parents=True, exist_ok=True)
    figures: list[Path] = []
    if png:
        for info in infos:
            prefix = f"{info.name}-" if len(infos) > 1 else ""
            for workload in info.workloads:
                figures += draw_workload(workload, out / "figures", prefix=slug(prefix) if prefix else "")
    html_path = out / "report.html"
    html_path.write_text(render_html(infos, title or f"frugalml report: {', '.join(i.name for i in infos)}", preamble))
    return ReportFiles(html_path, tuple(figures), infos)
