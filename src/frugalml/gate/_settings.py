"""The ``[gate]`` table: which metrics a check compares and how much worse each may get.

::

    [gate]
    confidence = 0.95          # one-sided: a regression is called only this sure
    latency_rounds = 20        # interleaved rounds of predict timing per model
    latency_calls = 100        # single-row predictions per round
    training_rounds = 5        # re-run each side's configuration this often, interleaved (0: use the stored trials)
    metrics = ["accuracy", "mean_step_ms"]   # optional: compare only these

    [gate.mean_step_ms]        # naming a metric makes it required on both sides
    max_relative_regression = 0.10   # 10% slower is tolerated
    max_absolute_regression = 0.0    # ms
    limit = 50                       # and never above 50 ms, whatever the baseline (re-measured: its fastest round)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from frugalml.exceptions import ConfigError
from frugalml.gate._metrics import GATE_METRICS, GateMetric
from frugalml.validation import Interval, check, check_keys, read_toml

_TOP_KEYS = ("confidence", "latency_rounds", "latency_calls", "training_rounds", "resamples", "seed", "metrics")
_METRIC_KEYS = ("max_relative_regression", "max_absolute_regression", "limit")
_TOLERANCE = Interval(float, 0, None)  # type: ignore[arg-type]
_ANY = Interval(float, None, None)  # type: ignore[arg-type]


@dataclass(frozen=True)
class MetricGate:
    """One metric's tolerances; ``limit`` is a hard bound on the candidate (a ceiling, or a
    floor for a metric where higher is better). ``required``: named in the gate, so both
    sides must have measured it."""

    metric: GateMetric
    max_relative_regression: float
    max_absolute_regression: float
    limit: float | None = None
    required: bool = False


@dataclass(frozen=True)
class GateSettings:
    """How :func:`frugalml.gate.check` decides."""

    confidence: float = 0.95
    latency_rounds: int = 20
    latency_calls: int = 100
    training_rounds: int = 5
    resamples: int = 2000
    seed: int = 0
    metrics: tuple[MetricGate, ...] = field(default_factory=lambda: tuple(
        MetricGate(m, m.max_relative_regression, m.max_absolute_regression) for m in GATE_METRICS.values()))

    @classmethod
    def from_config(cls, table: Mapping[str, Any]) -> "GateSettings":
        """Settings from a parsed ``[gate]`` table; a one-line ConfigError for anything wrong."""
        if not isinstance(table, Mapping):
            raise ConfigError(f"[gate] must be a table. Got {table!r} instead.")
        check_keys("[gate]", table, [*_TOP_KEYS, *GATE_METRICS])
        owner = "[gate]"
        confidence = check(owner, "confidence", table.get("confidence", 0.95), Interval(float, 0.5, 1, closed="left"))
        rounds = check(owner, "latency_rounds", table.get("latency_rounds", 20), Interval(int, 3, 1000, closed="both"))
        calls = check(owner, "latency_calls", table.get("latency_calls", 100), Interval(int, 10, 100_000, closed="both"))
        training = check(owner, "training_rounds", table.get("training_rounds", 5), Interval(int, 0, 100, closed="both"))
        resamples = check(owner, "resamples", table.get("resamples", 2000), Interval(int, 100, 100_000, closed="both"))
        seed = check(owner, "seed", table.get("seed", 0), Interval(int, 0, 2**32))
        chosen = table.get("metrics")
        if chosen is not None:
            if not isinstance(chosen, list) or not chosen or not all(isinstance(m, str) for m in chosen):
                raise ConfigError(f"[gate] metrics must be a non-empty list of metric names. Got {chosen!r} instead.")
            unknown = sorted(set(chosen) - set(GATE_METRICS))
            if unknown:
                raise ConfigError(f"[gate] metrics names unknown metric(s) {unknown}; known: "
                                  f"{', '.join(GATE_METRICS)}.")
        named = [name for name in GATE_METRICS if name in table]
        gates = []
        for name, metric in GATE_METRICS.items():
            spec = table.get(name, {})
            if not isinstance(spec, Mapping):
                raise ConfigError(f"[gate.{name}] must be a table of {', '.join(_METRIC_KEYS)}. Got {spec!r} instead.")
            check_keys(f"[gate.{name}]", spec, _METRIC_KEYS)
            if name in table and not spec:
                raise ConfigError(f"[gate.{name}] sets no threshold; give one of {', '.join(_METRIC_KEYS)}, "
                                  "or remove the table.")
            if chosen is not None and name not in chosen:
                if name in named:
                    raise ConfigError(f"[gate.{name}] sets thresholds for a metric that [gate] metrics leaves out; "
                                      f"add {name!r} to metrics or remove the table.")
                continue
            relative = check(f"[gate.{name}]", "max_relative_regression",
                             spec.get("max_relative_regression", metric.max_relative_regression), _TOLERANCE)
            absolute = check(f"[gate.{name}]", "max_absolute_regression",
                             spec.get("max_absolute_regression", metric.max_absolute_regression), _TOLERANCE)
            limit = spec.get("limit")
            if limit is not None:
                check(f"[gate.{name}]", "limit", limit, _ANY)
            gates.append(MetricGate(metric, float(relative), float(absolute), None if limit is None else float(limit),
                                    required=name in named or chosen is not None))
        return cls(float(confidence), int(rounds), int(calls), int(training), int(resamples), int(seed), tuple(gates))


def load_gate(path: str | Path) -> GateSettings:
    """The ``[gate]`` table of a TOML file (a gate file, or a study file that holds one)."""
    path = Path(path)
    data = read_toml(path, "gate file", "pass a TOML file with a [gate] table")
    if "gate" not in data:
        raise ConfigError(f"{path} has no [gate] table; add one (see `frugalml check --help`).")
    return GateSettings.from_config(data["gate"])
