"""Server settings: limits and tokens, validated in one place."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from frugalml.exceptions import ConfigError
from frugalml.lineage import parse_model_uri
from frugalml.validation import POSITIVE, POSITIVE_INT, Interval, check

_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0}
POLL_REGISTRY_S = 30.0  # how often a models:/NAME@ALIAS server checks its alias, unless told
MAX_FEATURE_SERIES = 10  # features with their own {feature=...} series on /metrics, unless told
_FEATURE_SERIES_RANGE = Interval(int, 0, 100_000, closed="both")
_POLL_RANGE = Interval(numbers.Real, 0, 86400, closed="both")  # type: ignore[arg-type]
_BATCH_WAIT_RANGE = Interval(numbers.Real, 0, 60_000, closed="both")  # type: ignore[arg-type]


def registry_alias(uri: str) -> tuple[str, str] | None:
    """``(NAME, ALIAS)`` of a ``models:/NAME@ALIAS`` URI; None for any other URI."""
    parsed = parse_model_uri(uri)
    return (parsed[0], parsed[2]) if parsed and parsed[2] else None


def parse_rate(text: str | float | None) -> float | None:
    """``"100/s"``, ``"600/min"`` or a number of requests per second; None means unlimited."""
    if text is None or isinstance(text, (int, float)) and not isinstance(text, bool):
        rate = None if text is None else float(text)
    else:
        count, _, unit = str(text).partition("/")
        try:
            rate = float(count) / _UNITS[unit.strip() or "s"]
        except (ValueError, KeyError):
            raise ConfigError(f"rate limit must look like '100/s' or '600/min'. Got {text!r} instead.") from None
    if rate is not None and not (0 < rate < math.inf):
        raise ConfigError(f"rate limit must be positive and finite. Got {text!r} instead.")
    return rate


@dataclass(frozen=True)
class ServerSettings:
    """HTTP-level settings of a prediction server.

    Args:
        token: bearer token for the state-changing ``/admin`` endpoints (disabled without one).
        predict_token: bearer token required on ``/predict`` and ``/feedback`` (None: open).
        max_body_bytes: larger request bodies get 413.
        max_rows: rows per predict request.
        rate_limit: requests per second per client address (None: unlimited); bursts
            of up to ``rate_burst`` requests (default: one second's worth) are allowed.
        body_timeout_s: a request whose body has not fully arrived within this many
            seconds gets 408, so a client that sends less than its Content-Length does
            not hold a connection open (uvicorn has no such timeout of its own).
        poll_registry_s: seconds between checks of a ``models:/NAME@ALIAS`` model's
            alias; when it moved, the new version is loaded and swapped in (None:
            ``POLL_REGISTRY_S``; 0: never). Other URIs have no alias to follow.
        max_feature_series: at most this many input features get their own ``{feature=...}``
            series on ``/metrics`` (four drift gauges and the out-of-range ratio each): all of
            them when the model has no more, else the drifted ones first (see
            :func:`frugalml.serve._metrics.shown_features`); aggregates cover every feature. 0:
            aggregates only. Alert rules see every feature whatever this is.
        max_batch_size: adaptive batching (None: off): predict requests that arrive together share
            one model call of at most this many rows (:mod:`frugalml.serve._batching`).
        max_batch_wait_ms: how long a request's rows wait for others to join a batch (None: 0, no
            deliberate wait: a batch takes the requests that came while the model was busy).
    """

    token: str | None = None
    predict_token: str | None = None
    max_body_bytes: int = 1_048_576
    max_rows: int = 10_000
    rate_limit: float | None = None
    rate_burst: float | None = None
    tracking_uri: str | None = None
    reference: str | None = None  # inputs table for a model without frugalml's reference file
    body_timeout_s: float = 10.0
    poll_registry_s: float | None = None
    max_feature_series: int = MAX_FEATURE_SERIES
    max_batch_size: int | None = None
    max_batch_wait_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_rows"):
            check("ServerSettings", name, getattr(self, name), POSITIVE_INT)
        for name in ("token", "predict_token"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or len(value) < 8):
                flag, env = ("--token", "FRUGALML_ADMIN_TOKEN") if name == "token" else \
                    ("--predict-token", "FRUGALML_PREDICT_TOKEN")
                got = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
                raise ConfigError(f"{name} ({flag}, or ${env}) must be a string of at least 8 characters; got {got}. "
                                  "Use a long random secret, or leave it unset.")
        object.__setattr__(self, "rate_limit", parse_rate(self.rate_limit))
        check("ServerSettings", "body_timeout_s", self.body_timeout_s, POSITIVE)
        if self.poll_registry_s is not None:
            check("ServerSettings", "poll_registry_s", self.poll_registry_s, _POLL_RANGE)
        check("ServerSettings", "max_feature_series", self.max_feature_series, _FEATURE_SERIES_RANGE)
        if self.max_batch_size is not None:
            check("ServerSettings", "max_batch_size", self.max_batch_size, POSITIVE_INT)
        if self.max_batch_wait_ms is not None:
            if self.max_batch_size is None:
                raise ConfigError("max_batch_wait_ms needs max_batch_size (--max-batch-wait-ms needs "
                                  "--max-batch-size N): without it there is no batching to wait for.")
            check("ServerSettings", "max_batch_wait_ms", self.max_batch_wait_ms, _BATCH_WAIT_RANGE)

    def poll_interval(self, uri: str) -> float:
        """Seconds between alias checks when serving ``uri`` (0: none)."""
        if registry_alias(uri) is None:
            return 0.0
        return POLL_REGISTRY_S if self.poll_registry_s is None else float(self.poll_registry_s)
