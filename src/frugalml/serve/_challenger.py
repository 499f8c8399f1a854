"""A challenger on live traffic: a second version in shadow (``--mirror``) or answering a share (``--canary P``).

The challenger predicts in its own process (a one-process pool, started with ``spawn``), so however
slow it is, or however much CPU or GIL it burns, the server's event loop does not wait for it:

- **mirror**: once the champion's answer is sent, the request's rows are handed to that process
  (:meth:`Challenger.observe_request`: a bounded in-flight count and ``pool.submit``, tens of
  microseconds); the answer comes back on the pool's thread, is compared with the champion's and
  recorded, never returned. When ``queue`` requests are in flight, more are dropped (counted as
  challenger errors, kind ``dropped``), so a stalled challenger costs memory of at most ``queue``
  requests.
- **canary**: a share ``P`` of the requests (exactly: an accumulator, not a coin) is answered by the
  challenger; the request waits for it at most ``timeout_s`` and otherwise (or when it fails) is
  answered by the champion, counted as a challenger ``timeout`` or ``model_error``.

:class:`Comparison` keeps the numbers (plain Python + numpy, testable without a server): each
version's requests, errors and predict times, agreement on the rows both predicted (mirror),
and each version's quality on the labels ``POST /feedback`` brings.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import logging
import math
import multiprocessing
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from frugalml.exceptions import ConfigError, one_line
from frugalml.processes import exit_with_parent
from frugalml.serve._model import ServedModel, load_model
from frugalml.serve._reference import Reference
from frugalml.validation import POSITIVE, POSITIVE_INT, Interval, check

logger = logging.getLogger("frugalml.serve")

MIRROR, CANARY = "mirror", "canary"
CHAMPION, CHALLENGER = "champion", "challenger"
ROLE_HEADER, VERSION_HEADER = b"x-frugalml-role", b"x-frugalml-version"  # which version answered
ANSWERED = "frugalml.answered"  # scope key: (role, version) of the model that answered a predict request
_SHADOW = "frugalml.shadow"  # scope key: a mirrored request's rows, handed over once its answer is sent
AGREEMENT_RTOL = 0.05  # regression: the challenger agrees when within 5% of the champion's value
_SHARE = Interval(float, 0, 1, closed="both")
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_KEPT_IDS = 100_000  # predictions kept per id for quality on feedback


@dataclass(frozen=True)
class ChallengerSettings:
    """How the challenger meets live traffic.

    Args:
        uri: the challenger's model URI (``models:/NAME@challenger``).
        mode: ``"mirror"`` (shadow: every request, answer recorded, never returned) or ``"canary"``.
        share: the share of requests the challenger answers in canary mode, in [0, 1].
        timeout_s: a canary request waits this long for the challenger, then the champion answers;
            a shadow answer slower than this is counted as a timeout too.
        queue: challenger requests in flight at most; more are dropped (counted).
        agreement_rtol: regression models agree when ``|challenger - champion| <= rtol * |champion|``.

    Example:
        >>> ChallengerSettings("models:/m@challenger", "canary", share=0.1).share
        0.1
    """

    uri: str
    mode: str = MIRROR
    share: float = 0.0
    timeout_s: float = 1.0
    queue: int = 64
    agreement_rtol: float = AGREEMENT_RTOL

    def __post_init__(self) -> None:
        if self.mode not in (MIRROR, CANARY):
            raise ConfigError(f"The 'mode' parameter of ChallengerSettings must be 'mirror' or 'canary'. "
                              f"Got {self.mode!r} instead.")
        check("ChallengerSettings", "share", self.share, _SHARE)
        check("ChallengerSettings", "timeout_s", self.timeout_s, POSITIVE)
        check("ChallengerSettings", "queue", self.queue, POSITIVE_INT)
        check("ChallengerSettings", "agreement_rtol", self.agreement_rtol, Interval(float, 0, None))


def challenger_settings(uri: str | None, mirror: bool, canary: str | float | None, workers: int | None = None,
                        timeout_s: float = 1.0) -> ChallengerSettings | None:
    """The one place ``--challenger``, ``--mirror`` and ``--canary`` become settings (None: no challenger);
    a one-line :class:`ConfigError` for a combination that cannot work."""
    if uri is None:
        if mirror or canary is not None:
            raise ConfigError(f"{'--mirror' if mirror else '--canary'} needs a challenger to send traffic to: add "
                              "--challenger models:/NAME@challenger.")
        return None
    if mirror and canary is not None:
        raise ConfigError("--mirror and --canary exclude each other: shadow every request (--mirror) or let the "
                          "challenger answer a share of them (--canary P), not both.")
    if workers is not None:
        raise ConfigError("--challenger is not supported with --workers yet; serve the comparison from one process.")
    if canary is None:
        return ChallengerSettings(uri, MIRROR, timeout_s=timeout_s)
    try:
        share = float(canary)
    except ValueError:
        share = math.nan
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"--canary must be a share of requests in [0, 1] (0.1: one in ten). Got {canary!r} instead.")
    return ChallengerSettings(uri, CANARY, share=share, timeout_s=timeout_s)


def check_same_schema(champion: Reference, challenger: Reference, uri: str) -> None:
    """A one-line :class:`ConfigError` when the challenger takes other inputs than the champion: other
    feature names, another order, or text where the champion takes numbers (numeric dtypes may differ:
    both take numbers, converted the same way)."""
    ours = [(f.name, f.categorical) for f in champion.features]
    theirs = [(f.name, f.categorical) for f in challenger.features]
    if ours == theirs:
        return
    names, other = [n for n, _ in ours], [n for n, _ in theirs]
    if names != other:
        missing, extra = sorted(set(names) - set(other)), sorted(set(other) - set(names))
        detail = (f"it lacks {missing[:5]}" if missing else "") + ("; " if missing and extra else "") + \
            (f"it adds {extra[:5]}" if extra else "") or "the same features in another order"
    else:
        kinds = [n for (n, a), (_, b) in zip(ours, theirs) if a != b]
        detail = f"{kinds[:5]} are text in one model and numbers in the other"
    raise ConfigError(f"the challenger {uri} takes other inputs than the champion ({detail}); a challenger must "
                      "take the champion's input schema to be compared on the same requests.")


# --- the challenger's own process -------------------------------------------------------------

_MODEL: Any = None


def _load(path: str, reference: str | None) -> None:
    global _MODEL
    exit_with_parent()  # a server killed, or stopped before closing its challenger, leaves no process
    _MODEL = load_model(path, None, reference).model


def _ready() -> bool:
    return _MODEL is not None


def _predict(X: np.ndarray) -> tuple[np.ndarray, float]:
    """The challenger's predictions and its predict time, timed where it runs."""
    started = time.perf_counter()
    try:
        predictions = np.asarray(_MODEL.predict(X))
    except Exception as error:  # noqa: BLE001 - a user's exception may not unpickle in the server
        raise RuntimeError(one_line(error, typed=True, squash=True)) from None
    return predictions, time.perf_counter() - started


# --- the numbers ---------------------------------------------------------------------------------

class _Histogram:
    """Cumulative-able bucket counts and a bounded sample for percentiles."""

    def __init__(self, keep: int) -> None:
        self.counts = [0] * (len(_BUCKETS) + 1)
        self.total = 0.0
        self.samples: collections.deque[float] = collections.deque(maxlen=keep)

    def add(self, seconds: float) -> None:
        self.counts[int(np.searchsorted(_BUCKETS, seconds))] += 1
        self.total += seconds
        self.samples.append(seconds)


def _percentiles(samples: Sequence[float]) -> dict[str, Any]:
    if not samples:
        return {"n": 0, "p50": None, "p99": None}
    p50, p99 = np.quantile(np.asarray(samples) * 1000.0, [0.5, 0.99])
    return {"n": len(samples), "p50": round(float(p50), 4), "p99": round(float(p99), 4)}


class Comparison:
    """What both versions did on live traffic, per role (``champion`` / ``challenger``) and version.

    Thread-safe: the request path, the pool's callback thread and ``/metrics`` all touch it."""

    def __init__(self, task: str, rtol: float = AGREEMENT_RTOL, quality_window: int = 200,
                 keep: int = 10_000) -> None:
        self.task, self.rtol, self.keep = task, rtol, keep
        self.lock = threading.Lock()
        self.requests: collections.Counter[tuple[str, str, str]] = collections.Counter()  # role, version, code
        self.errors: collections.Counter[tuple[str, str, str]] = collections.Counter()  # role, version, kind
        self.request_seconds: dict[tuple[str, str], _Histogram] = {}
        self.predict_seconds: dict[tuple[str, str], _Histogram] = {}
        self.compared_requests = self.compared_rows = self.agreed_rows = 0
        self.paired: dict[str, collections.deque[float]] = {r: collections.deque(maxlen=keep)
                                                            for r in (CHAMPION, CHALLENGER)}
        self.predictions: collections.OrderedDict[str, list[Any]] = collections.OrderedDict()
        self.scores: dict[str, collections.deque[float]] = {r: collections.deque(maxlen=quality_window)
                                                            for r in (CHAMPION, CHALLENGER)}

    def _histogram(self, table: dict, key: tuple[str, str]) -> _Histogram:
        found = table.get(key)
        if found is None:
            found = table[key] = _Histogram(self.keep)
        return found

    def request(self, role: str, version: str, code: int, seconds: float) -> None:
        """A predict request answered by ``role`` (the whole request's latency)."""
        with self.lock:
            self.requests[role, version, str(code)] += 1
            self._histogram(self.request_seconds, (role, version)).add(seconds)
            if code >= 500:
                self.errors[role, version, "model_error"] += 1

    def predicted(self, role: str, version: str, seconds: float) -> None:
        with self.lock:
            self._histogram(self.predict_seconds, (role, version)).add(seconds)

    def error(self, version: str, kind: str) -> None:
        """A challenger error: ``model_error``, ``timeout`` or ``dropped``."""
        with self.lock:
            self.errors[CHALLENGER, version, kind] += 1

    def agree(self, champion: np.ndarray, challenger: np.ndarray) -> np.ndarray:
        """Per row: the two answers agree (same label; for regression, within ``rtol`` of the champion)."""
        if self.task == "regression":
            try:
                return np.isclose(challenger.astype(float), champion.astype(float), rtol=self.rtol, atol=1e-12)
            except (TypeError, ValueError):
                pass
        return np.asarray([str(a) == str(b) for a, b in zip(champion.tolist(), challenger.tolist())])

    def compare(self, ids: Sequence[str], champion: np.ndarray, challenger: np.ndarray, champion_s: float,
                challenger_s: float) -> None:
        """Both answers to one request's rows (mirror)."""
        agreed = int(self.agree(champion, challenger).sum())
        values = challenger.tolist()
        with self.lock:
            self.compared_requests += 1
            self.compared_rows += len(values)
            self.agreed_rows += agreed
            self.paired[CHAMPION].append(champion_s)
            self.paired[CHALLENGER].append(challenger_s)
            for prediction_id, value in zip(ids, values):
                kept = self.predictions.get(prediction_id)
                if kept is not None:
                    kept[1] = value

    def answered(self, role: str, ids: Sequence[str], predictions: np.ndarray) -> None:
        """Keep the answer given for each id, to score it when its label comes."""
        with self.lock:
            for prediction_id, value in zip(ids, predictions.tolist()):
                self.predictions[prediction_id] = [value, None] if role == CHAMPION else [None, value]
            while len(self.predictions) > _KEPT_IDS:
                self.predictions.popitem(last=False)

    def feedback(self, prediction_id: str, label: Any) -> None:
        with self.lock:
            kept = self.predictions.pop(str(prediction_id), None)
            if kept is None:
                return
            for role, value in zip((CHAMPION, CHALLENGER), kept):
                if value is None:
                    continue
                if self.task == "regression":
                    try:
                        self.scores[role].append((float(value) - float(label)) ** 2)
                    except (TypeError, ValueError):
                        continue
                else:
                    self.scores[role].append(float(str(value) == str(label)))

    def quality(self, role: str) -> dict[str, Any] | None:
        with self.lock:
            scores = list(self.scores[role])
        if not scores:
            return None
        mean = float(np.mean(scores))
        metric, value = ("rmse", math.sqrt(mean)) if self.task == "regression" else ("accuracy", mean)
        return {metric: round(value, 6), "labels": len(scores)}

    def side(self, role: str, version: str) -> dict[str, Any]:
        with self.lock:
            served = sum(n for (r, v, _), n in self.requests.items() if r == role and v == version)
            errors = {k: n for (r, v, k), n in self.errors.items() if r == role and v == version}
            predict = self.predict_seconds.get((role, version))
            samples, predictions = (list(predict.samples), sum(predict.counts)) if predict else ([], 0)
        return {"version": version, "requests_answered": served, "predictions": predictions, "errors": errors,
                "errors_total": sum(errors.values()), "predict_ms": _percentiles(samples),
                "quality": self.quality(role)}

    def compared(self) -> dict[str, Any]:
        with self.lock:
            paired = {role: list(samples) for role, samples in self.paired.items()}
            requests, rows, agreed = self.compared_requests, self.compared_rows, self.agreed_rows
        return {"requests": requests, "rows": rows, "agreed_rows": agreed,
                "agreement": round(agreed / rows, 6) if rows else None,
                "predict_ms": {role: _percentiles(samples) for role, samples in paired.items()}}


# --- the challenger in the server ----------------------------------------------------------------

@dataclass(frozen=True)
class CanaryAnswer:
    predictions: np.ndarray
    predict_s: float


class Challenger:
    """The challenger version of a served model, predicting in its own process.

    Example:
        >>> settings = ChallengerSettings("models:/m@challenger", "mirror")
        >>> challenger = Challenger(champion, load_model(settings.uri), settings).start()  # doctest: +SKIP
    """

    def __init__(self, champion: ServedModel, served: ServedModel, settings: ChallengerSettings,
                 reference: str | None = None, quality_window: int = 200) -> None:
        check_same_schema(champion.reference, served.reference, settings.uri)
        self.champion_uri = champion.uri
        self.served = served
        self.settings = settings
        self.comparison = Comparison(champion.reference.task, settings.agreement_rtol, quality_window)
        self._reference = reference
        self._lock = threading.Lock()
        self._in_flight = 0
        self._credit = 0.0
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._restarted = 0.0

    @property
    def version(self) -> str:
        return self.served.version or "challenger"

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn"), initializer=_load,
            initargs=(str(self.served.path), self._reference))

    def start(self, timeout_s: float = 300.0) -> Challenger:
        """Start the challenger's process and wait until it has loaded the model."""
        self._pool = self._new_pool()
        try:
            self._pool.submit(_ready).result(timeout=timeout_s)
        except Exception as error:
            self.close()
            raise ConfigError(f"the challenger {self.settings.uri} did not load in its own process "
                              f"({one_line(error, typed=True)}); see the log above.") from None
        return self

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _submit(self, rows: np.ndarray) -> concurrent.futures.Future | None:
        """Hand ``rows`` to the challenger's process; None (counted) when too many are in flight."""
        with self._lock:
            if self._in_flight >= self.settings.queue or self._pool is None:
                self.comparison.error(self.version, "dropped")
                return None
            self._in_flight += 1
        try:
            future = self._pool.submit(_predict, rows)
        except Exception as error:  # noqa: BLE001 - a broken pool: count it, restart it now and then
            with self._lock:
                self._in_flight -= 1
            self.comparison.error(self.version, "model_error")
            self._restart(error)
            return None
        future.add_done_callback(self._settled)
        return future

    def _restart(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self._restarted < 10.0 or self._pool is None:
            return
        self._restarted = now
        logger.warning("the challenger's process failed (%s); starting it again", type(error).__name__)
        old, self._pool = self._pool, self._new_pool()
        old.shutdown(wait=False, cancel_futures=True)

    def _settled(self, future: concurrent.futures.Future) -> None:
        """On the pool's thread: every challenger call ends here once (errors and predict times)."""
        with self._lock:
            self._in_flight -= 1
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.comparison.error(self.version, "model_error")
            logger.warning("the challenger failed to predict: %s", one_line(error))
            return
        _, seconds = future.result()
        self.comparison.predicted(CHALLENGER, self.version, seconds)
        if seconds > self.settings.timeout_s and self.settings.mode == MIRROR:
            self.comparison.error(self.version, "timeout")

    def _route(self) -> bool:
        """Canary: whether the challenger answers this request (an exact share, spread evenly)."""
        with self._lock:
            self._credit += self.settings.share
            if self._credit >= 1.0:
                self._credit -= 1.0
                return True
            return False

    async def canary(self, rows: np.ndarray) -> CanaryAnswer | None:
        """The challenger's answer to a canary request, or None: the champion answers (not routed, or the
        challenger failed, was too slow or too busy; counted)."""
        if self.settings.mode != CANARY or not self._route():
            return None
        future = self._submit(rows)
        if future is None:
            return None
        try:
            predictions, seconds = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)),
                                                          self.settings.timeout_s)
        except TimeoutError:
            self.comparison.error(self.version, "timeout")
            return None
        except Exception:  # noqa: BLE001 - counted by _settled
            return None
        if len(predictions) != len(rows):
            self.comparison.error(self.version, "model_error")
            return None
        return CanaryAnswer(predictions, seconds)

    def after_predict(self, scope: dict, champion_version: str, rows: np.ndarray, predictions: np.ndarray,
                      predict_s: float, ids: Sequence[str], by_challenger: bool) -> None:
        """On the request path, after a request was predicted: note who answered, keep the answers for
        feedback and, in mirror mode, hand the rows to the challenger (off the request path)."""
        role, version = (CHALLENGER, self.version) if by_challenger else (CHAMPION, champion_version or "champion")
        scope[ANSWERED] = (role, version)
        if not by_challenger:
            self.comparison.predicted(CHAMPION, version, predict_s)
        self.comparison.answered(role, ids, predictions)
        if self.settings.mode == MIRROR:  # handed over in observe_request, once the client has its answer
            scope[_SHADOW] = (list(ids), rows, predictions, predict_s)

    def _mirrored(self, ids: list[str], champion: np.ndarray, champion_s: float,
                  future: concurrent.futures.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        predictions, seconds = future.result()
        if len(predictions) == len(champion):
            self.comparison.compare(ids, champion, predictions, champion_s, seconds)

    def observe_request(self, scope: dict, champion_version: str, code: int, seconds: float) -> None:
        """A predict request's outcome, labelled by the version that answered (the champion's when the
        request failed before a model answered); called once its answer is sent. A mirrored request's rows
        go to the challenger's process now."""
        role, version = scope.get(ANSWERED) or (CHAMPION, champion_version or "champion")
        self.comparison.request(role, version, code, seconds)
        shadow = scope.pop(_SHADOW, None)
        if shadow is not None:  # after the answer went out: waking the pool's threads costs the client nothing
            ids, rows, predictions, predict_s = shadow
            future = self._submit(rows)
            if future is not None:
                future.add_done_callback(functools.partial(self._mirrored, ids, predictions, predict_s))

    def feedback(self, data: Any) -> None:
        """Labels ``POST /feedback`` accepted (already checked): score each version's answer."""
        for item in data if isinstance(data, list) else [data]:
            self.comparison.feedback(str(item["prediction_id"]), item["label"])

    def report(self, champion: ServedModel) -> dict[str, Any]:
        """What ``GET /challenger`` answers."""
        comparison = self.comparison
        regression = comparison.task == "regression"
        return {"mode": self.settings.mode, "canary_share": self.settings.share if self.settings.mode == CANARY
                else None, "task": comparison.task,
                "agreement_rule": f"within {comparison.rtol:g} of the champion's value (relative)" if regression
                else "the same label",
                "timeout_s": self.settings.timeout_s,
                "champion": {"uri": champion.uri, **comparison.side(CHAMPION, champion.version or "champion")},
                "challenger": {"uri": self.settings.uri, **comparison.side(CHALLENGER, self.version)},
                "compared": comparison.compared()}


class ChallengerCollector(Collector):
    """Per-version families on ``/metrics`` (computed at scrape time)."""

    def __init__(self, challenger: Challenger) -> None:
        self.comparison = challenger.comparison

    def collect(self) -> Iterator[Metric]:
        c = self.comparison
        with c.lock:
            requests, errors = dict(c.requests), dict(c.errors)
            histograms = {name: {k: (list(h.counts), h.total) for k, h in table.items()}
                          for name, table in (("request", c.request_seconds), ("predict", c.predict_seconds))}
            compared, rows, agreed = c.compared_requests, c.compared_rows, c.agreed_rows
        for name, doc, last, counts in (
            ("frugalml_version_requests", "Predict requests by the version that answered (role champion or "
             "challenger) and status code", "code", requests),
            ("frugalml_version_errors", "Errors by version: a request the model failed, and the challenger's "
             "failures, timeouts and dropped requests", "kind", errors),
        ):
            family = CounterMetricFamily(name, doc, labels=["version", "role", last])
            for (role, version, value), n in sorted(counts.items()):
                family.add_metric([version, role, value], n)
            yield family
        for name, doc in (("request", "Predict request latency by the version that answered"),
                          ("predict", "Model predict time by version, served and shadow (the same requests)")):
            family = HistogramMetricFamily(f"frugalml_version_{name}_duration_seconds", doc, labels=["version", "role"])
            for (role, version), (counts, total) in sorted(histograms[name].items()):
                cumulative = np.cumsum(counts).tolist()
                buckets = [(repr(edge), n) for edge, n in zip(_BUCKETS, cumulative)] + [("+Inf", cumulative[-1])]
                family.add_metric([version, role], buckets, total)
            yield family
        yield CounterMetricFamily("frugalml_challenger_compared_requests", "Requests both versions predicted",
                                  compared)
        yield CounterMetricFamily("frugalml_challenger_compared_rows", "Rows both versions predicted", rows)
        yield CounterMetricFamily("frugalml_challenger_agreed_rows", "Rows on which both versions agreed", agreed)
        if rows:
            yield GaugeMetricFamily("frugalml_challenger_agreement_ratio", "Share of compared rows on which "
                                    "both versions agreed", agreed / rows)
        quality = GaugeMetricFamily("frugalml_version_quality", "Accuracy or RMSE of each version's answers over "
                                    "its latest labels", labels=["role", "metric"])
        for role in (CHAMPION, CHALLENGER):
            found = c.quality(role)
            if found:
                metric = "rmse" if "rmse" in found else "accuracy"
                quality.add_metric([role, metric], found[metric])
        yield quality
