from __future__ import annotations

import math

from frugalml.exceptions import ConfigError


def positive(owner: str, name: str, value: object, *, integer: bool = False) -> float:
    """Check that ``value`` is a finite number > 0; raise a one-line ConfigError if not."""
    kind = "an int" if integer else "a number"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"The '{name}' parameter of {owner} must be {kind} in the range (0, inf). Got {value!r} instead."
        )
    return value
