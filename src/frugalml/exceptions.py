"""The frugalml error hierarchy.

Every error a user can cause is a :class:`FrugalError` whose message is one line
saying what was wrong and how to fix it; the CLI prints it without a traceback::

    FrugalError
     ├── ConfigError        a study file, search space, budget or rule is invalid
     ├── DataError          a dataset is missing, empty, has NaN or lacks its target
     ├── TrialUsageError    user training code misused the Trial API
     ├── StoreError         the results store is missing, unreadable or from another study
     │    └── StoreLockedError  another process holds the store's write lock
     └── DiskFullError      no space left (or quota exceeded) where frugalml writes
"""

from __future__ import annotations


class FrugalError(Exception):
    """Base class of errors caused by user input; the message is one line."""


class ConfigError(FrugalError, ValueError):
    """A study file, search space, budget or stopping rule is invalid."""


class DataError(FrugalError, ValueError):
    """A dataset cannot be found or is unusable (empty, NaN, missing target)."""


class TrialUsageError(FrugalError, RuntimeError):
    """User training code misused the Trial API (e.g. never called ``trial.step``)."""


class StoreError(FrugalError, RuntimeError):
    """The results store is missing, locked, or belongs to another study."""


class StoreLockedError(StoreError):
    """Another process (another ``frugalml tune``, or any program in a write
    transaction) held the results store for longer than the store's timeout."""


class DiskFullError(FrugalError, OSError):
    """A write failed for lack of space (ENOSPC, or EDQUOT: a quota); nothing was half-written."""
