"""Names a user gives things (studies, workloads, models, aliases): checked once, here.

A name becomes a folder, part of a trial id, an MLflow tag and a line on a terminal, so
it must be safe as each: printable, no path separator, not ``.`` or ``..``, not hidden,
short enough for every filesystem once frugalml adds its suffixes (``-retrain-12``)::

    >>> check_name("study", "mnist-under-400mb")
    'mnist-under-400mb'
    >>> check_name("study", "..")
    Traceback (most recent call last):
    ...
    frugalml.exceptions.ConfigError: The study name '..' is not allowed: ...
"""

from __future__ import annotations

import argparse
from typing import Callable

from frugalml.exceptions import ConfigError

MAX_NAME_CHARS = 100
MAX_NAME_BYTES = 200  # UTF-8; with frugalml's suffixes (-retrain-12) under the 255 of ext4/APFS
_FORBIDDEN = set('/\\:*?"<>|')  # separators everywhere, and what Windows refuses in a file name
ALLOWED = (f"1-{MAX_NAME_CHARS} printable characters ({MAX_NAME_BYTES} bytes), not starting with '.', '-' or a space, "
           f"without / \\ : * ? \" < > | or control characters")


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a usable name, or None when it is."""
    if not isinstance(name, str):
        return "it is not a string"
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME_CHARS:
        return f"it has {len(name)} characters"
    try:
        n_bytes = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    if n_bytes > MAX_NAME_BYTES:
        return f"it takes {n_bytes} bytes in UTF-8 (at most {MAX_NAME_BYTES})"
    if not name.isprintable():
        return "it holds a control character"
    if name[0] in ".- " or name[-1] == " ":
        return "it starts with '.', '-' or a space, or ends with a space"
    if bad := sorted(set(name) & _FORBIDDEN):
        return f"it holds {' '.join(bad)}"
    return None


def check_name(kind: str, name: object) -> str:
    """``name`` if it is a usable ``kind`` name (e.g. "study"), else a one-line :class:`ConfigError`."""
    problem = name_problem(name)
    if problem is not None:
        shown = ascii(name) if isinstance(name, str) else repr(name)  # escapes ESC, NUL, newlines
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise ConfigError(f"The {kind} name {shown} is not allowed: {problem}. Use {ALLOWED}.")
    return name  # type: ignore[return-value]


def name_argument(kind: str) -> Callable[[str], str]:
    """An argparse ``type=`` that checks a ``kind`` name (a mistake is the parser's one-line error)."""
    def parse(text: str) -> str:
        try:
            return check_name(kind, text)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = f"{kind} name"
    return parse
