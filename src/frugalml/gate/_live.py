"""``frugalml check --live URL``: a running server's challenger comparison as the evidence.

The server (``frugalml serve ... --challenger URI --mirror``) measured both versions on the same
requests (``GET /challenger``); the candidate is the challenger, the baseline the champion. A
metric is a regression when the challenger is worse by more than both of the gate's tolerances
(the ``[gate]`` table's ``predict_p50_ms`` / ``predict_p99_ms``, ``accuracy`` / ``rmse``), or
when the two agree on fewer rows than ``min_agreement``. There is no bootstrap here: the server
keeps percentiles, not samples, and paired requests on one machine already remove most of the
noise a re-measurement would fight.
"""

from __future__ import annotations

import math
from typing import Any

from frugalml.exceptions import FrugalError, one_line
from frugalml.gate._decide import PASS, REGRESSION, MetricResult
from frugalml.gate._metrics import GATE_METRICS
from frugalml.gate._result import CheckResult
from frugalml.gate._settings import GateSettings
from frugalml.metrics import ACCURACY, RMSE


def fetch_comparison(url: str) -> dict[str, Any]:
    """``GET URL/challenger``; a one-line :class:`FrugalError` when there is none to read."""
    import httpx

    target = url.rstrip("/") + "/challenger"
    try:
        response = httpx.get(target, timeout=10, trust_env=False)
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        raise FrugalError(f"cannot read {target}: {error}; is `frugalml serve ... --challenger URI` running "
                          "there?") from None
    if response.status_code == 404:
        raise FrugalError(f"{url} serves no challenger (404 on /challenger); start it with --challenger URI "
                          "--mirror.")
    if response.status_code != 200:
        raise FrugalError(f"{target} answered {response.status_code}: {one_line(response.text)}")
    return response.json()


def _result(name: str, unit: str, higher_is_better: bool, baseline: float, candidate: float, n_baseline: int,
            n_candidate: int, regression: bool, reason: str) -> MetricResult:
    sign = -1.0 if higher_is_better else 1.0
    worse = sign * (candidate - baseline)
    relative = worse / abs(baseline) if baseline else (math.inf if worse > 0 else 0.0)
    ratio = candidate / baseline if baseline else math.nan
    return MetricResult(name, unit, higher_is_better, baseline, candidate, ratio, (math.nan, math.nan), worse,
                        worse, relative, REGRESSION if regression else PASS, reason, n_baseline, n_candidate)


def _tolerated(settings: GateSettings, name: str, baseline: float, candidate: float) -> MetricResult | None:
    """One gated metric (None: the gate leaves it out), worse only beyond both tolerances."""
    gate = next((g for g in settings.metrics if g.metric.name == name), None)
    if gate is None:
        return None
    metric = gate.metric
    worse = (baseline - candidate) if metric.higher_is_better else (candidate - baseline)
    relative = worse / abs(baseline) if baseline else (math.inf if worse > 0 else 0.0)
    tolerance = f"{gate.max_relative_regression:.0%} and {gate.max_absolute_regression:g}{metric.unit}"
    if gate.limit is not None and (candidate < gate.limit if metric.higher_is_better else candidate > gate.limit):
        regression, reason = True, f"{candidate:.4g}{metric.unit} is beyond the limit {gate.limit:g}{metric.unit}"
    elif worse > gate.max_absolute_regression and relative > gate.max_relative_regression:
        regression, reason = True, f"worse by {relative:.1%} ({worse:.3g}{metric.unit}) on live traffic; " \
                                   f"tolerated: {tolerance}"
    else:
        regression, reason = False, f"within {tolerance} on live traffic"
    return _result(name, metric.unit, metric.higher_is_better, baseline, candidate, 0, 0, regression, reason)


def live_check(url: str, settings: GateSettings | None = None, *, min_agreement: float = 0.95,
               min_requests: int = 100, report: dict[str, Any] | None = None) -> CheckResult:
    """Judge the challenger of the server at ``url`` against its champion from their live comparison.

    Args:
        url: the server (``http://127.0.0.1:8000``).
        settings: the gate (its latency and quality tolerances).
        min_agreement: the least share of compared rows on which both versions must agree.
        min_requests: the comparison must hold this many requests; fewer is a usage error (exit 2).
        report: a ``GET /challenger`` answer already read (default: read it from ``url``).
    """
    settings = settings or GateSettings()
    report = report if report is not None else fetch_comparison(url)
    champion, challenger, compared = report["champion"], report["challenger"], report["compared"]
    paired = compared["requests"] > 0
    seen = compared["requests"] if paired else min(champion["predictions"], challenger["predictions"])
    if seen < min_requests:
        raise FrugalError(f"{url} has compared {seen} requests so far, fewer than --min-requests {min_requests}; "
                          "send more traffic first (or lower --min-requests).")
    latency = compared["predict_ms"] if paired else {"champion": champion["predict_ms"],
                                                     "challenger": challenger["predict_ms"]}
    results: list[MetricResult] = []
    for name, key in (("predict_p50_ms", "p50"), ("predict_p99_ms", "p99")):
        b, c = latency["champion"][key], latency["challenger"][key]
        if b is not None and c is not None and (found := _tolerated(settings, name, b, c)) is not None:
            results.append(found)
    agreement = compared.get("agreement")
    if agreement is not None:
        results.append(_result("agreement", "", True, 1.0, agreement, compared["rows"], compared["rows"],
                               agreement < min_agreement,
                               f"agree on {agreement:.1%} of {compared['rows']} rows; required: {min_agreement:.0%}"))
    quality_b, quality_c = champion.get("quality") or {}, challenger.get("quality") or {}
    for name in (ACCURACY, RMSE):
        if name in quality_b and name in quality_c:
            found = _tolerated(settings, name, quality_b[name], quality_c[name])
            if found is not None:
                results.append(found)
    notes = [f"live comparison from {url}/challenger ({report['mode']} mode): "
             + (f"{compared['requests']} requests both versions predicted" if paired else
                f"each version on its own requests ({champion['predictions']} and {challenger['predictions']})"),
             f"challenger errors: {challenger['errors_total']} {challenger['errors'] or ''}".rstrip()]
    missing = tuple(name for name in ("agreement",) if agreement is None)
    if not any(r.metric in GATE_METRICS and GATE_METRICS[r.metric].kind == "quality" for r in results):
        notes.append("quality: not compared (no labels for both versions yet: POST /feedback)")
    return CheckResult(f"{challenger['uri']} (version {challenger['version']}, live)",
                       f"{champion['uri']} (version {champion['version']}, live)", settings.confidence,
                       tuple(results), missing, tuple(notes))
