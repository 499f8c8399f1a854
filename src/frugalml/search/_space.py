"""Search spaces: a mapping of parameter name to choices or a range.

* a list -> categorical choices (the only form grid search accepts);
* a table ``{low = .., high = .., log = true, int = false}`` -> a numeric range;
* a scalar -> a fixed value.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

import optuna

from frugalml.exceptions import ConfigError
from frugalml.validation import POSITIVE, POSITIVE_INT, Interval, check

_RANGE_KEYS = {"low", "high", "log", "int", "step"}


def to_distributions(space: Mapping[str, Any]) -> dict[str, optuna.distributions.BaseDistribution]:
    """Translate a frugalml space into Optuna distributions (fixed values are left out)."""
    distributions = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            distributions[name] = optuna.distributions.CategoricalDistribution(spec)
        elif isinstance(spec, Mapping):
            low, high = spec["low"], spec["high"]
            if spec.get("int"):
                distributions[name] = optuna.distributions.IntDistribution(
                    int(low), int(high), log=bool(spec.get("log", False)), step=int(spec.get("step", 1))
                )
            else:
                distributions[name] = optuna.distributions.FloatDistribution(
                    float(low), float(high), log=bool(spec.get("log", False)), step=spec.get("step")
                )
    return distributions


def fixed_values(space: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in space.items() if not isinstance(v, (list, Mapping))}


def validate_space(space: Mapping[str, Any], method: str) -> None:
    """Raise a one-line ConfigError for an unusable space."""
    if not isinstance(space, Mapping) or not space:
        raise ConfigError("[search] needs a non-empty 'space', e.g. space = { batch_size = [30, 300] }.")
    for name, spec in space.items():
        if isinstance(spec, list):
            if not spec:
                raise ConfigError(f"Search space '{name}' is an empty list; give at least one value.")
            repeated = sorted({repr(v) for i, v in enumerate(spec) if v in spec[:i]})
            if repeated:
                raise ConfigError(f"Search space '{name}' lists {', '.join(repeated)} more than once; list each value "
                                  "once (use [study] repeats to run a configuration several times).")
        elif isinstance(spec, Mapping):
            if method == "grid":
                raise ConfigError(f"Grid search needs a list of values for '{name}', not a range.")
            unknown = set(spec) - _RANGE_KEYS
            if unknown or not {"low", "high"} <= set(spec):
                raise ConfigError(f"Range '{name}' needs 'low' and 'high' (optional: log, int, step); got {dict(spec)}.")
            low, high = spec["low"], spec["high"]
            if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and low < high):
                raise ConfigError(f"Range '{name}' needs numbers with low < high; got low={low!r}, high={high!r}.")
            if spec.get("log") and low <= 0:
                raise ConfigError(f"Log range '{name}' needs low > 0; got low={low!r}.")
            for flag in ("log", "int"):
                if not isinstance(spec.get(flag, False), bool):
                    raise ConfigError(f"Range '{name}' needs {flag} = true or false; got {spec[flag]!r}.")
            step = spec.get("step")
            if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step < math.inf):
                raise ConfigError(f"Range '{name}' needs a number step > 0; got step={step!r}.")
            if step is not None and spec.get("log"):
                raise ConfigError(f"Range '{name}' cannot have both a step and log = true; drop one.")
        values = spec if isinstance(spec, list) else [spec.get("low"), spec.get("high")] if isinstance(spec, Mapping) else [spec]
        _check_known(name, values)


_KNOWN = {"batch_size": POSITIVE_INT, "learning_rate": POSITIVE, "alpha": Interval(numbers.Real, 0, None)}  # what the built-in workloads accept


def _check_known(name: str, values: list[Any]) -> None:
    constraint = _KNOWN.get(name)
    for value in values if constraint is not None else ():
        check("the search space", name, value, constraint)


def config_id(params: Mapping[str, Any]) -> str:
    """A stable, readable id for a configuration: ``batch_size=30,learning_rate=0.1``."""
    return ",".join(f"{k}={params[k]!r}" if isinstance(params[k], str) else f"{k}={params[k]}" for k in sorted(params))
