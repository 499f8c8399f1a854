"""A check's verdict, and the forms a CI system reads: JSON, JUnit XML, Markdown."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from frugalml.deploy import SloCheck
from frugalml.gate._decide import IMPROVED, REGRESSION, MetricResult


@dataclass(frozen=True)
class CheckResult:
    """What :func:`frugalml.gate.check` found; ``passed`` is the exit-code decision."""

    candidate: str
    baseline: str
    confidence: float
    metrics: tuple[MetricResult, ...]
    not_measured: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    slo: tuple[SloCheck, ...] = ()  # the serving budgets the model must meet outright, whatever the baseline

    @property
    def slo_breaches(self) -> tuple[SloCheck, ...]:
        return tuple(c for c in self.slo if c.broken)

    @property
    def regressions(self) -> tuple[MetricResult, ...]:
        return tuple(m for m in self.metrics if m.status == REGRESSION)

    @property
    def passed(self) -> bool:
        return not self.regressions and not self.slo_breaches

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "regression" if self.regressions else "breaks its SLO"

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "candidate": self.candidate, "baseline": self.baseline,
                "confidence": self.confidence, "metrics": [m.to_dict() for m in self.metrics],
                "not_measured": list(self.not_measured), "notes": list(self.notes),
                "slo": [c.to_dict() for c in self.slo]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_junit(self) -> str:
        """One test case per metric; a regression is a failure."""
        root = ET.Element("testsuites")
        suite = ET.SubElement(root, "testsuite", name="frugalml check", tests=str(len(self.metrics) + len(self.slo)),
                           failures=str(len(self.regressions) + len(self.slo_breaches)),
                           skipped=str(len(self.not_measured)))
        for result in self.metrics:
            case = ET.SubElement(suite, "testcase", classname="frugalml.check", name=result.metric)
            if result.status == REGRESSION:
                ET.SubElement(case, "failure", message=result.reason).text = _line(result)
            else:
                ET.SubElement(case, "system-out").text = _line(result)
        for check in self.slo:
            case = ET.SubElement(suite, "testcase", classname="frugalml.check.slo", name=check.key)
            if check.broken:
                ET.SubElement(case, "failure", message=check.line).text = check.line
            else:
                ET.SubElement(case, "system-out").text = check.line
        for name in self.not_measured:
            ET.SubElement(ET.SubElement(suite, "testcase", classname="frugalml.check", name=name), "skipped",
                          message="not measured on both sides")
        return ET.tostring(root, encoding="unicode", xml_declaration=True)

    def to_markdown(self) -> str:
        """A summary a CI system can post on a pull request."""
        icon = {REGRESSION: "regression", IMPROVED: "improved"}
        lines = [f"### frugalml check: **{self.verdict.upper()}**", "",
                 f"Candidate `{self.candidate}` against baseline `{self.baseline}` "
                 f"({self.confidence:.0%} one-sided confidence).", "",
                 "| metric | baseline | candidate | ratio (CI) | verdict |", "|---|---:|---:|---:|---|"]
        for m in self.metrics:
            lines.append(f"| {m.metric} | {_fmt(m.baseline, m.unit)} | {_fmt(m.candidate, m.unit)} | "
                         f"{_ratio(m)} | {icon.get(m.status, 'pass')}: {m.reason} |")
        if self.slo:
            lines += ["", "SLO (the serving budgets it was tuned under):", ""]
            lines += [f"- {'**broken**' if c.broken else 'met'}: {c.line}" for c in self.slo]
        if self.not_measured:
            lines += ["", "Not measured on both sides: " + ", ".join(self.not_measured) + "."]
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def _fmt(value: float, unit: str) -> str:
    return "-" if not math.isfinite(value) else f"{value:.4g}{(' ' + unit) if unit else ''}"


def _ratio(result: MetricResult) -> str:
    low, high = result.ratio_interval
    if not math.isfinite(result.ratio):
        return "-"
    return f"{result.ratio:.3f}" + (f" ({low:.3f}-{high:.3f})" if math.isfinite(low) and low != high else "")


def _line(result: MetricResult) -> str:
    return (f"{result.metric}: baseline {_fmt(result.baseline, result.unit)}, candidate "
            f"{_fmt(result.candidate, result.unit)}, ratio {_ratio(result)}: {result.reason}")
