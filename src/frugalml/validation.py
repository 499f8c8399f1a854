"""One way to validate settings, one message format (after scikit-learn's ``_param_validation``).

Every parser of user input (study tables, rule settings, serving settings) declares
what a value may be and lets this module word the error::

    >>> check("Patience", "patience", 0, Interval(int, 1, None))
    Traceback (most recent call last):
    ...
    frugalml.exceptions.ConfigError: The 'patience' parameter of Patience must be an int in the range [1, inf). Got 0 instead.
    >>> check_keys("[prediction]", {"confidance": 0.9}, ["confidence", "skip"])
    Traceback (most recent call last):
    ...
    frugalml.exceptions.ConfigError: Unknown key(s) ['confidance'] in [prediction]; allowed: confidence, skip.
"""

from __future__ import annotations

import math
import numbers
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from frugalml.exceptions import ConfigError


@dataclass(frozen=True)
class Interval:
    """Numbers of ``kind`` (``int`` or ``float``) between ``low`` and ``high`` (None: unbounded).

    ``closed`` is ``"left"``, ``"right"``, ``"both"`` or ``"neither"``. NaN never passes,
    nor a bool; an ``int`` interval also accepts integral floats only when ``integral_floats``.
    """

    kind: type
    low: float | None
    high: float | None
    closed: str = "left"
    integral_floats: bool = False

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
            return False
        if self.kind is int and not isinstance(value, numbers.Integral):
            if not (self.integral_floats and math.isfinite(value) and value == int(value)):
                return False
        if self.low is not None and (value < self.low or (value == self.low and self.closed in ("right", "neither"))):
            return False
        if self.high is not None and (value > self.high or (value == self.high and self.closed in ("left", "neither"))):
            return False
        return math.isfinite(value)

    def __str__(self) -> str:
        left = "[" if self.closed in ("left", "both") and self.low is not None else "("
        right = "]" if self.closed in ("right", "both") and self.high is not None else ")"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        article = "an int" if self.kind is int else "a float" if self.kind is float else "a number"
        return f"{article} in the range {left}{low}, {high}{right}"


POSITIVE = Interval(numbers.Real, 0, None, closed="neither")  # type: ignore[arg-type]
POSITIVE_INT = Interval(int, 1, None)
NON_NEGATIVE_INT = Interval(int, 0, None)
AT_LEAST_ONE = Interval(float, 1, None)


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (strings, usually)."""

    values: tuple[Any, ...]

    def __contains__(self, value: object) -> bool:
        return any(value == option and type(value) is type(option) for option in self.values)

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


def check(owner: str, name: str, value: Any, constraint: Interval | Options) -> Any:
    """Return ``value`` if it meets ``constraint``, else raise the one-line :class:`ConfigError`."""
    if value not in constraint:
        raise ConfigError(f"The {name!r} parameter of {owner} must be {constraint}. Got {value!r} instead.")
    return value


def positive(owner: str, name: str, value: object, *, integer: bool = False) -> float:
    """A finite number > 0 (an int >= 1 with ``integer``)."""
    return check(owner, name, value, POSITIVE_INT if integer else POSITIVE)


def printable(text: str) -> bool:
    """True for text that encodes as UTF-8 and has no control characters: safe in a
    metric label, a log line or a JSON answer (a lone surrogate is valid JSON but not UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return text.isprintable()


def check_keys(where: str, table: Mapping[str, Any] | Iterable[str], allowed: Iterable[str]) -> None:
    """A one-line :class:`ConfigError` naming the keys of ``table`` not in ``allowed``."""
    allowed = sorted(allowed)
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(f"Unknown key(s) {unknown} in {where}; allowed: {', '.join(allowed)}.")


def read_toml(path: str | Path, what: str, hint: str) -> dict[str, Any]:
    """The tables of a TOML file; a one-line :class:`ConfigError` naming ``what`` (e.g. "study file")
    when it is missing, unreadable or malformed, with ``hint`` saying what to pass instead."""
    path = Path(path)
    try:
        if not path.is_file():
            found = "is not a regular file" if path.exists() else "not found"
            raise ConfigError(f"{what} {path} {found}; {hint}.")
        size = path.stat().st_size
        if size > MAX_TOML_BYTES:
            raise ConfigError(f"{what} {path} has {size:,} bytes; a settings file is at most {MAX_TOML_BYTES:,}: "
                              "list fewer values (a grid over ranges: method = \"random\" with n_trials).")
        data = tomllib.loads(path.read_text())
    except ConfigError:  # a ValueError too: said as it is
        raise
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:  # both are ValueErrors: caught first
        raise ConfigError(f"{what} {path} is not valid TOML: {error}.") from None
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the path
        raise ConfigError(f"cannot read {what} {ascii(str(path))}: {getattr(error, 'strerror', None) or error}.") from None
    except RecursionError:
        raise ConfigError(f"{what} {path} nests arrays or tables too deeply to read; at most {MAX_TOML_DEPTH} "
                          "levels.") from None
    if _depth(data) > MAX_TOML_DEPTH:
        raise ConfigError(f"{what} {path} nests arrays or tables more than {MAX_TOML_DEPTH} levels deep; "
                          "flatten it.")
    return data


MAX_TOML_BYTES = 2**20  # a study file is a few hundred bytes; a 40,000-value grid list fits
MAX_TOML_DEPTH = 16


def _depth(value: Any, level: int = 0) -> int:
    """How deeply ``value`` nests lists and tables (stops counting past the limit)."""
    if level > MAX_TOML_DEPTH:
        return level
    children = value.values() if isinstance(value, Mapping) else value if isinstance(value, list) else ()
    return max((_depth(child, level + 1) for child in children), default=level)
