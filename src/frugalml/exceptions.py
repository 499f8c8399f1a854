"""The frugalml error hierarchy.

Every error a user can cause is a :class:`FrugalError` whose message is one line
saying what was wrong and how to fix it; the CLI prints it without a traceback::

    FrugalError
     ├── ConfigError        a study file, search space, budget or rule is invalid
     ├── DataError          a dataset is missing, empty, has NaN or lacks its target
     ├── TrialUsageError    user training code misused the Trial API, or failed on a mistake every trial repeats
     ├── StoreError         the results store is missing, unreadable or from another study
     │    └── StoreLockedError  another process holds the store's write lock
     └── DiskFullError      no space left (or quota exceeded) where frugalml writes

:func:`one_line` is the one way an error from anywhere (a user's trial, a subprocess's
stderr, a library) becomes the one line a record, a log or a response shows.
"""

from __future__ import annotations


class FrugalError(Exception):
    """Base class of errors caused by user input; the message is one line."""


class ConfigError(FrugalError, ValueError):
    """A study file, search space, budget or stopping rule is invalid."""


class DataError(FrugalError, ValueError):
    """A dataset cannot be found or is unusable (empty, NaN, missing target)."""


class TrialUsageError(FrugalError, RuntimeError):
    """User training code misused the Trial API (e.g. never called ``trial.step``), or a trial
    failed on a user error every trial would repeat (the study stops at it)."""


class StoreError(FrugalError, RuntimeError):
    """The results store is missing, locked, or belongs to another study."""


class StoreLockedError(StoreError):
    """Another process (another ``frugalml tune``, or any program in a write
    transaction) held the results store for longer than the store's timeout."""


class DiskFullError(FrugalError, OSError):
    """A write failed for lack of space (ENOSPC, or EDQUOT: a quota); nothing was half-written."""


MESSAGE_CHARS = 300
"""The most characters of an error's text a record, response or log line carries."""


def one_line(error: BaseException | str, *, typed: bool = False, last: bool = False, squash: bool = False,
             limit: int = MESSAGE_CHARS) -> str:
    """``error`` as one line of at most ``limit`` characters.

    Its first non-empty line (``last``: its last, as in a subprocess's stderr, whose final line
    names the exception); ``squash`` joins every line instead. ``typed`` puts the exception's
    type in front. An exception with no text is its type's name.

    Example:
        >>> one_line(ValueError("bad width\\n  at line 3"), typed=True)
        'ValueError: bad width'
        >>> one_line("Traceback ...\\nKeyError: 'x'", last=True)
        "KeyError: 'x'"
        >>> one_line(KeyError())
        'KeyError'
    """
    text = str(getattr(error, "message", None) or error) if isinstance(error, BaseException) else str(error)
    if squash:
        line = " ".join(text.split())
    else:
        lines = [part.strip() for part in text.strip().splitlines() if part.strip()]
        line = (lines[-1] if last else lines[0]) if lines else ""
    if isinstance(error, BaseException) and (typed or not line):
        line = f"{type(error).__name__}: {line}" if line else type(error).__name__
    return line[:limit]
