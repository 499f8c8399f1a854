"""Search spaces: a mapping of parameter name to choices or a range.

* a list -> categorical choices (the only form grid search accepts);
* a table ``{low = .., high = .., log = true, int = false}`` -> a numeric range;
* a scalar -> a fixed value.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import TYPE_CHECKING, Any, Mapping

from frugalml.exceptions import ConfigError
from frugalml.validation import POSITIVE, POSITIVE_INT, Interval, check, printable

_RANGE_KEYS = {"low", "high", "log", "int", "step"}

if TYPE_CHECKING:
    import optuna


def to_distributions(space: Mapping[str, Any]) -> dict[str, optuna.distributions.BaseDistribution]:
    """Translate a frugalml space into Optuna distributions (fixed values are left out)."""
    import optuna  # lazy: only Optuna's samplers need it

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
            repeated = _repeated(spec)
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
            if not all(math.isfinite(float(v)) and abs(v) <= MAX_BOUND for v in (low, high)):
                raise ConfigError(f"Range '{name}' needs finite bounds within ±{MAX_BOUND:g}; got low={low!r}, "
                                  f"high={high!r}.")
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
            if step is not None and (high - low) / step > MAX_CONFIGURATIONS * 10_000:
                raise ConfigError(f"Range '{name}' has a step of {step!r}: {(high - low) / step:.3g} values; "
                                  "use a larger step or none.")
            try:
                with warnings.catch_warnings():  # Optuna's own notes (a step that does not divide) come at sampling
                    warnings.simplefilter("ignore")
                    to_distributions({name: spec})
            except (ValueError, ArithmeticError) as error:  # what Optuna refuses, e.g. an int range of floats
                raise ConfigError(f"Range '{name}' is not a usable range: {error}.") from None
        if isinstance(spec, list) and (odd := next((v for v in spec if isinstance(v, str) and not printable(v)), None)):
            raise ConfigError(f"Search space '{name}' lists {ascii(odd)}, which holds a control character; "
                              "use printable text.")
        values = spec if isinstance(spec, list) else [spec.get("low"), spec.get("high")] if isinstance(spec, Mapping) else [spec]
        _check_known(name, values)


MAX_CONFIGURATIONS = 100_000  # trials a study may plan: configurations x repeats x workloads
MAX_BOUND = 1e300  # range bounds: room for Optuna's arithmetic on them (high - low) without overflow


def grid_size(space: Mapping[str, Any]) -> int:
    """How many configurations grid search runs over ``space``: counted, not enumerated."""
    return math.prod(len(spec) for spec in space.values() if isinstance(spec, list))


def check_size(what: str, count: int, hint: str) -> None:
    """A one-line ConfigError when ``count`` trials exceed :data:`MAX_CONFIGURATIONS`."""
    if count > MAX_CONFIGURATIONS:
        raise ConfigError(f"{what} comes to {count:,} trials; frugalml runs at most {MAX_CONFIGURATIONS:,} in a study: "
                          f"{hint}.")


def _repeated(values: list[Any]) -> list[str]:
    """The values listed more than once (``1`` and ``1.0`` are the same value), in one pass."""
    seen: set[Any] = set()
    repeated = set()
    for value in values:
        key = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        if key in seen:
            repeated.add(repr(value))
        seen.add(key)
    return sorted(repeated)


_KNOWN = {"batch_size": POSITIVE_INT, "learning_rate": POSITIVE, "alpha": Interval(numbers.Real, 0, None)}  # what the built-in workloads accept


def _check_known(name: str, values: list[Any]) -> None:
    constraint = _KNOWN.get(name)
    for value in values if constraint is not None else ():
        check("the search space", name, value, constraint)


def config_id(params: Mapping[str, Any]) -> str:
    """A stable, readable id for a configuration: ``batch_size=30,learning_rate=0.1``."""
    return ",".join(f"{k}={params[k]!r}" if isinstance(params[k], str) else f"{k}={params[k]}" for k in sorted(params))
