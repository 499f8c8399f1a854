"""What every framework adapter shares: the trial it reports to, and the framework's version."""

from __future__ import annotations

import importlib
from typing import Any

from frugalml.exceptions import ConfigError, TrialUsageError


def is_stop(error: BaseException) -> bool:
    """True for the stop an in-process executor raises inside ``trial.step``/``report``."""
    from frugalml.trial import TrialStopped

    return isinstance(error, TrialStopped)


def require_trial(trial: Any, owner: str) -> Any:
    """``trial`` if it is the :class:`frugalml.Trial` a training function receives; else a one-line error."""
    from frugalml.trial import Trial

    if not isinstance(trial, Trial):
        raise TrialUsageError(
            f"{owner} needs the frugalml Trial your training function receives (train(trial, ...) run by "
            f"frugalml.tune). Got {type(trial).__name__} instead."
        )
    return trial


def require(module: str, minimum: str, extra: str, package: str | None = None) -> Any:
    """Import ``module`` at ``minimum`` version or later, or say how to install it (one line).

    ``package``: the distribution's name where it differs from the module's (``scikit-learn``).
    """
    package = package or module
    try:
        imported = importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"this adapter needs {package}; install it with: pip install 'frugalml[{extra}]'") from None
    version = getattr(imported, "__version__", "0")
    if _release(version) < _release(minimum):
        raise ConfigError(f"this adapter needs {package} >= {minimum}, but {version} is installed; upgrade it with: "
                          f"pip install -U '{package}>={minimum}'")
    return imported


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)
