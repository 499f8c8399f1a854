"""Where a dataset comes from: an explicit file, a data dir, the local cache or OpenML.

Search order for a dataset asked for by name (the first hit wins):

1. ``path=``: a CSV, CSV.gz, Parquet or ``.npz`` file;
2. the ``data_dir`` argument, then ``$FRUGALML_DATA_DIR``;
3. the ``shared/data`` folder beside the repository (found by walking up from this
   module), then ``<cwd>/../shared/data``;
4. the cache, ``$FRUGALML_CACHE_DIR`` (default ``~/.cache/frugalml``) ``/datasets``;
5. OpenML, only for built-in names and only when online (``FRUGALML_OFFLINE=1``
   forces offline).

A file is named ``<name>.csv.gz``, ``<name>.csv``, ``<name>.parquet`` or ``<name>.npz``.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from frugalml.exceptions import ConfigError, DataError
from frugalml.files import cache_root

SUFFIXES = (".csv.gz", ".csv", ".parquet", ".npz")
TASKS = ("classification", "regression")
_OPENML_HOST = ("api.openml.org", 443)


class _Builtin(NamedTuple):
    task: str
    openml_name: str
    substitute_for: str | None = None


# red_wine's integer quality score is treated as regression, as in the thesis.
# casp_protein is a labelled stand-in for wave_energy, reachable only by its own name.
BUILTIN_DATASETS: dict[str, _Builtin] = {
    "casp_protein": _Builtin("regression", "physiochemical_protein", substitute_for="wave_energy"),
    "diabetes": _Builtin("classification", "diabetes"),
    "mnist_784": _Builtin("classification", "mnist_784"),
    "red_wine": _Builtin("regression", "red_wine"),
    "wave_energy": _Builtin("regression", "wave_energy"),
}


@dataclass(frozen=True)
class DatasetSource:
    """A resolved dataset: where its rows come from and what task it is.

    Attributes:
        name: the dataset's name (a built-in name or the file's stem).
        path: the file to read, or None when it is still to be fetched from OpenML.
        target: the target column (CSV/Parquet) or array (``.npz``, default ``y``).
        task: ``"classification"``, ``"regression"`` or None (inferred when prepared).
        substitute_for: the dataset this one stands in for (label it in every output).
        openml_name: the dataset's name on OpenML, for built-ins.

    Example::

        >>> resolve_dataset("diabetes").task
        'classification'
    """

    name: str
    path: Path | None
    target: str | None
    task: str | None
    substitute_for: str | None = None
    openml_name: str | None = None


def is_offline() -> bool:
    """True when ``FRUGALML_OFFLINE`` is set or OpenML cannot be reached."""
    if os.environ.get("FRUGALML_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    return not _openml_reachable()


@functools.cache
def _openml_reachable() -> bool:
    try:
        socket.create_connection(_OPENML_HOST, timeout=3).close()
    except OSError:
        return False
    return True


def file_format(path: Path) -> str | None:
    """``"csv"``, ``"parquet"`` or ``"npz"`` from the file name, or None."""
    suffix = _suffix(path)
    return None if suffix is None else ("csv" if suffix.startswith(".csv") else suffix[1:])


def _suffix(path: Path) -> str | None:
    return next((suffix for suffix in SUFFIXES if path.name.lower().endswith(suffix)), None)


def default_data_dirs() -> list[Path]:
    """``shared/data`` beside an ancestor of this module, then ``<cwd>/../shared/data``."""
    candidates = [parent / "shared" / "data" for parent in Path(__file__).resolve().parents]
    candidates.append(Path.cwd().resolve().parent / "shared" / "data")
    found: list[Path] = []
    for candidate in candidates:
        if candidate.is_dir() and candidate not in found:
            found.append(candidate)
    return found


def _search_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    dirs = [Path(d).expanduser() for d in (data_dir, os.environ.get("FRUGALML_DATA_DIR")) if d]
    return [*dirs, *default_data_dirs(), cache_root() / "datasets"]


def _check_task(task: str | None) -> None:
    if task is not None and task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS} or None, but got {task!r}.")


def resolve_dataset(
    name: str | None = None,
    *,
    path: str | os.PathLike | None = None,
    target: str | None = None,
    data_dir: str | os.PathLike | None = None,
    task: str | None = None,
) -> DatasetSource:
    """Find a dataset by name or file; see the module docstring for the search order.

    Args:
        name: a built-in name (``mnist_784``, ``diabetes``, ``red_wine``, ``wave_energy``,
            ``casp_protein``) or the stem of a file in a data dir or the cache.
        path: an explicit CSV, CSV.gz, Parquet or ``.npz`` file (wins over any search).
        target: the target column; default ``"target"`` (``"y"`` in an ``.npz``).
        data_dir: a folder searched before ``$FRUGALML_DATA_DIR`` and the defaults.
        task: overrides the task; None keeps a built-in's task or infers it.

    Raises:
        DataError: the file is missing, the name is unknown, or it is only on OpenML
            while offline.
    """
    _check_task(task)
    if path is not None:
        file = Path(path).expanduser()
        suffix = _suffix(file)
        if suffix is None:
            raise DataError(f"dataset file {str(file)!r} must end in one of {', '.join(SUFFIXES)}.")
        if not file.is_file():
            raise DataError(f"dataset file {str(file)!r} does not exist.")
        name = name or file.name[: -len(suffix)]
        return _source(name, file, target or ("y" if suffix == ".npz" else "target"), task)
    if not name:
        raise DataError("pass a dataset name or path= to a CSV, CSV.gz, Parquet or .npz file.")
    for folder in _search_dirs(data_dir):
        for suffix in SUFFIXES:
            file = folder / f"{name}{suffix}"
            if file.is_file():
                return _source(name, file, target or ("y" if suffix == ".npz" else "target"), task)
    if name not in BUILTIN_DATASETS:
        raise DataError(
            f"unknown dataset {name!r}: known datasets are {', '.join(sorted(BUILTIN_DATASETS))}; "
            f"or pass path= to a CSV, CSV.gz, Parquet or .npz file."
        )
    if is_offline():
        hint = " ('casp_protein' is a labelled stand-in, not the same data)" if name == "wave_energy" else ""
        raise DataError(
            f"dataset {name!r} is not available offline{hint}: pass path= to a file, "
            f"put {name}.csv.gz (or .csv/.parquet/.npz) in the folder named by FRUGALML_DATA_DIR, "
            f"or go online to download it from OpenML."
        )
    return _source(name, None, target or "target", task)


def _source(name: str, path: Path | None, target: str, task: str | None) -> DatasetSource:
    builtin = BUILTIN_DATASETS.get(name)
    return DatasetSource(
        name=name,
        path=path,
        target=target,
        task=task or (builtin.task if builtin else None),
        substitute_for=builtin.substitute_for if builtin else None,
        openml_name=builtin.openml_name if builtin else None,
    )
