"""Prepare a dataset once in the parent: validate, split, standardise, write ``.npy`` files.

Workers then memory-map the files (:meth:`PreparedData.arrays`), so the pages are
file-backed and shared between trials instead of copied into each worker.

Layout of ``<cache>/prepared/<name>-<key>/``: ``X_train.npy``, ``y_train.npy``,
``X_test.npy``, ``y_test.npy`` and ``meta.json``; for a table with text columns, which
are one-hot encoded (:mod:`._encode`), also their raw text, ``text_train.npy`` and
``text_test.npy``. The key hashes the source file and every preparation setting, so a
changed file or seed gives a new directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from frugalml.exceptions import ConfigError, DataError, one_line
from frugalml.files import cache_root, sha256_file, write_folder_atomic
from frugalml.workloads._encode import (
    check_text_columns, encoded_names, make_encoder, raw_rows, text_columns, training_categories,
)
from frugalml.workloads._openml import fetch_to_cache
from frugalml.workloads._sources import DatasetSource, file_format

_FORMAT_VERSION = 1
_DTYPES = ("float64", "float32")
_HASH_LIMIT_BYTES = 512 * 2**20  # larger files are keyed by size and mtime instead
ARRAY_NAMES = ("X_train", "y_train", "X_test", "y_test")
_COLUMNS_FILE = "X_train.columns.npy"
_TEXT_PREFIX = "text_"  # text_train.npy, text_test.npy: the raw text columns of a table that has some


@dataclass(frozen=True)
class PreparedData:
    """A split, standardised dataset on disk, ready to be memory-mapped by workers.

    Attributes:
        name: the dataset's name.
        directory: the folder holding the ``.npy`` files and ``meta.json``.
        task: ``"classification"`` or ``"regression"``.
        n_train, n_test, n_features: the split's shape.
        classes: the original class labels (as strings) in code order; () for regression.
        substitute_for: the dataset this one stands in for, if any.

    Example::

        >>> data = prepare_dataset(resolve_dataset("diabetes"))
        >>> X_train, y_train, X_test, y_test = data.arrays()
        >>> X_train.shape
        (537, 8)
    """

    name: str
    directory: Path
    task: str
    n_train: int
    n_test: int
    n_features: int
    classes: tuple[str, ...] = ()
    substitute_for: str | None = None

    @classmethod
    def load(cls, directory: str | os.PathLike) -> PreparedData:
        """Open an already prepared directory (e.g. in a worker given only its path)."""
        directory = Path(directory)
        meta = json.loads((directory / "meta.json").read_text())
        return cls(
            name=meta["name"],
            directory=directory,
            task=meta["task"],
            n_train=meta["n_train"],
            n_test=meta["n_test"],
            n_features=meta["n_features"],
            classes=tuple(meta["classes"]),
            substitute_for=meta["substitute_for"],
        )

    def meta(self) -> dict[str, Any]:
        """The full ``meta.json``: source, settings, feature names, scaler statistics."""
        return json.loads((self.directory / "meta.json").read_text())

    def raw(self, split: str = "train") -> np.ndarray:
        """The split's features as a client sends them: the scaler undone, one-hot columns back to their text.

        An object array (numbers as ``float``, text as ``str``) when the table has text columns,
        else float64; columns in the table's order (``meta()["feature_names"]``).
        """
        meta = self.meta()
        mean, scale = np.asarray(meta["scaler_mean"]), np.asarray(meta["scaler_scale"])
        X = np.load(self.directory / f"X_{split}.npy") * scale + mean
        categories = meta.get("categories") or {}
        if not categories:
            return X
        names = meta["feature_names"]
        numeric = [n for n in names if n not in categories]
        text = np.load(self.directory / f"{_TEXT_PREFIX}{split}.npy")
        raw = np.empty((len(X), len(names)), dtype=object)
        raw[:, [names.index(n) for n in numeric]] = X[:, : len(numeric)]
        raw[:, [names.index(n) for n in categories]] = text
        return raw

    def encoder(self) -> Any:
        """The fitted ``ColumnTransformer`` that one-hot encodes raw rows (:meth:`raw`) into the prepared
        columns (before scaling), or None when the table has no text columns."""
        meta = self.meta()
        categories = meta.get("categories") or {}
        if not categories:
            return None
        names = meta["feature_names"]
        by_position = {names.index(n): found for n, found in categories.items()}
        return make_encoder(len(names), by_position).fit(self.raw("train"))

    def arrays(self, mmap: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(X_train, y_train, X_test, y_test)``, read-only memory maps unless ``mmap=False``."""
        mode = "r" if mmap else None
        arrays = (np.load(self.directory / f"{name}.npy", mmap_mode=mode) for name in ARRAY_NAMES)
        return tuple(arrays)  # type: ignore[return-value]

    def frame(self) -> pd.DataFrame:
        """``X_train`` as a DataFrame laid out like a loaded table (column-major).

        This is the layout of ``fetch_openml(as_frame=True)``: each ``.iloc`` row batch
        is then converted into a fresh C-ordered copy by scikit-learn, as in the
        thesis. The column-major file is written on first use (atomically); call this
        once in the parent to keep that one-off cost out of the trials. The frame itself
        maps the file, so it is not copied into each worker.
        """
        file = self.directory / _COLUMNS_FILE
        if not file.is_file():
            rows = np.load(self.directory / "X_train.npy", mmap_mode="r")
            tmp = self.directory / f".{_COLUMNS_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            try:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=rows.dtype, shape=rows.shape, fortran_order=True)
                chunk = max(1, 2**24 // max(1, rows.shape[1] * rows.itemsize))
                for start in range(0, rows.shape[0], chunk):
                    out[start : start + chunk] = rows[start : start + chunk]
                out.flush()
                del out
                os.replace(tmp, file)
            finally:
                tmp.unlink(missing_ok=True)
        return pd.DataFrame(np.load(file, mmap_mode="r"), copy=False)


def prepare_dataset(
    source: DatasetSource,
    *,
    seed: int = 0,
    test_size: float = 0.3,
    dtype: str = "float64",
    cache_dir: str | os.PathLike | None = None,
) -> PreparedData:
    """Load, validate, split (shuffled, ``random_state=seed``) and standardise a dataset.

    The scaler is fitted on the training split only; zero-variance columns become 0.
    Text columns are one-hot encoded over the training split's categories first (at
    most ``MAX_CATEGORIES`` each; a category only in the test split encodes as all 0).
    The result is written once to ``<cache>/prepared/<name>-<key>/`` through a
    temporary directory and a rename, and reused on later calls without reloading.

    Raises:
        ConfigError: ``test_size`` or ``dtype`` is invalid.
        DataError: the data is empty, too small, lacks its target, has NaN/inf features,
            or a text column with missing values or too many distinct values (one line
            saying which).
    """
    if not 0.0 < test_size < 1.0:
        raise ConfigError(f"`0 < test_size < 1` must hold, but got test_size={test_size!r}.")
    if str(dtype) not in _DTYPES:
        raise ConfigError(f"dtype must be one of {_DTYPES}, but got {dtype!r}.")
    dtype = str(dtype)
    root = cache_root(cache_dir)
    if source.path is None:
        source = replace(source, path=fetch_to_cache(source, root))
    assert source.path is not None
    settings = {
        "version": _FORMAT_VERSION,
        "file": _fingerprint(source.path),
        "seed": int(seed),
        "test_size": float(test_size),
        "dtype": dtype,
        "target": source.target,
        "task": source.task,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    directory = root / "prepared" / f"{source.name}-{key}"
    if (directory / "meta.json").is_file():
        return PreparedData.load(directory)

    X, y, feature_names, text = _load(source)
    task, y, classes = _encode_target(source, y)
    with np.errstate(over="ignore", invalid="ignore"):
        if task == "regression" and not np.isfinite(np.var(np.asarray(y, dtype=np.float64))):
            raise DataError(f"dataset {source.name!r} has target values too large for a squared loss (their "
                            "variance overflows float64); rescale the target column.")
    n = len(y)
    n_test = math.ceil(test_size * n)
    if min(n - n_test, n_test) < 2:
        raise DataError(
            f"dataset {source.name!r} has {n} rows: too few for a {1 - test_size:.0%}/{test_size:.0%} split "
            f"with at least 2 rows in each part."
        )
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    train_idx, test_idx = train_test_split(np.arange(n), test_size=test_size, random_state=seed, shuffle=True)
    categories: dict[str, list[str]] = {}
    column_names = feature_names
    if text:  # one-hot, over the training split's categories; the raw text is kept for the registered model
        assert feature_names is not None
        raw_text = X[:, [feature_names.index(c) for c in text]].astype(str)
        X, categories = _one_hot(X, train_idx, feature_names, text)
        column_names = encoded_names(feature_names, categories)
    y_dtype = np.int64 if task == "classification" else dtype
    meta = {
        **{k: v for k, v in settings.items() if k != "version"},
        "name": source.name,
        "task": task,
        "n_train": len(train_idx),
        "n_test": len(test_idx),
        "n_features": X.shape[1],
        "classes": list(classes),
        "substitute_for": source.substitute_for,
        "openml_name": source.openml_name,
        "source": str(source.path),
        "feature_names": feature_names,  # the table's columns, as a client sends them
        "categories": categories,  # per text column, its one-hot categories (see workloads._encode)
    }

    def write(tmp: Path) -> None:
        # Stream rows into memory-mapped outputs in chunks: no full-size float copy of
        # the data is ever held in anonymous memory, and temporaries stay small.
        chunk = max(1, 2**24 // (X.shape[1] * np.dtype(dtype).itemsize))
        outputs = []
        for split, idx in (("train", train_idx), ("test", test_idx)):
            shape = (len(idx), X.shape[1])
            out = np.lib.format.open_memmap(tmp / f"X_{split}.npy", mode="w+", dtype=dtype, shape=shape)
            for start in range(0, len(idx), chunk):
                out[start : start + chunk] = X[idx[start : start + chunk]]
            np.save(tmp / f"y_{split}.npy", y[idx].astype(y_dtype))
            if text:
                np.save(tmp / f"{_TEXT_PREFIX}{split}.npy", raw_text[idx])
            outputs.append(out)
        scaler = StandardScaler()  # fitted on the training split only
        with np.errstate(over="ignore", invalid="ignore"):  # values near the float limit: refused below
            for start in range(0, len(train_idx), chunk):
                scaler.partial_fit(outputs[0][start : start + chunk])
            mean, scale = scaler.mean_.astype(dtype), scaler.scale_.astype(dtype)  # scale_ is 1 where variance is 0
            _check_scalable(source.name, np.isfinite(mean) & np.isfinite(scale), column_names)
            for out in outputs:
                for start in range(0, len(out), chunk):
                    block = out[start : start + chunk]
                    block -= mean
                    block /= scale
                    _check_scalable(source.name, np.isfinite(block).all(axis=0), column_names)
                out.flush()
        meta.update(scaler_mean=scaler.mean_.tolist(), scaler_scale=scaler.scale_.tolist())
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))

    write_folder_atomic(directory, write, complete="meta.json")
    return PreparedData.load(directory)


def _one_hot(raw: np.ndarray, train_idx: np.ndarray, feature_names: list[str],
             text: list[str]) -> tuple[np.ndarray, dict[str, list[str]]]:
    """Rows with their text columns one-hot encoded over the training split's categories."""
    positions = [feature_names.index(c) for c in text]
    found = training_categories(raw[train_idx], positions)
    encoder = make_encoder(len(feature_names), dict(zip(positions, found))).fit(raw[train_idx])
    return np.asarray(encoder.transform(raw), dtype=np.float64), dict(zip(text, found))


def _fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    if stat.st_size > _HASH_LIMIT_BYTES:
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return {"sha256": sha256_file(path)}


def _check_scalable(name: str, finite: np.ndarray, feature_names: list[str] | None) -> None:
    """A :class:`DataError` naming the columns whose standardisation is not finite (values near ±1.8e308)."""
    if not finite.all():
        columns = [feature_names[j] if feature_names else f"x{j}" for j in np.flatnonzero(~finite)]
        raise DataError(
            f"dataset {name!r} has features too large to standardise (columns: {_names(columns)}: their mean or "
            "variance overflows float64); rescale them (e.g. divide by a power of 10) or drop them."
        )


def _names(names: list[Any], limit: int = 8) -> str:
    shown = ", ".join(str(name) for name in names[:limit])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > limit else shown


def _load(source: DatasetSource) -> tuple[np.ndarray, np.ndarray, list[str] | None, list[str]]:
    """Read the file and validate it; returns raw features (an object array when some are text), raw target,
    feature names and the text columns."""
    path, name, target = source.path, source.name, source.target
    assert path is not None
    fmt = file_format(path)
    if fmt == "npz":
        return (*_load_npz(path, name, target or "y"), None, [])
    if path.stat().st_size == 0:
        raise DataError(f"dataset {name!r} ({path}) is an empty file.")
    try:
        frame = pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"dataset {name!r} ({path}) is empty: no header and no rows.") from None
    except Exception as error:  # a corrupt or unreadable file: one line for the user
        raise DataError(f"cannot read dataset {name!r} ({path}): {one_line(error, typed=True, squash=True)}") from error
    if len(frame) == 0:
        raise DataError(f"dataset {name!r} ({path}) has a header but no rows.")
    target = target or "target"
    if target not in frame.columns:
        raise DataError(
            f"dataset {name!r} has no target column {target!r}; its columns are: "
            f"{_names(list(frame.columns))}; name it: target = \"<column>\" in the workload, --target in "
            "frugalml retrain."
        )
    features = [column for column in frame.columns if column != target]
    if not features:
        raise DataError(f"dataset {name!r} has no feature columns besides the target {target!r}.")
    text = text_columns(frame, features)
    check_text_columns(name, frame, text)
    numeric = [c for c in features if c not in text]
    X = frame[numeric].to_numpy(dtype=np.float64)
    _check_finite(name, X, numeric, frame[target])
    if text:  # one-hot encoded once split (the categories are the training split's)
        X = raw_rows(frame, features, text)
    return X, frame[target].to_numpy(), [str(c) for c in features], [str(c) for c in text]


def _load_npz(path: Path, name: str, target: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if "X" not in keys or target not in keys:
                raise DataError(
                    f"dataset {name!r} ({path}) must hold arrays 'X' and {target!r}, but holds: {_names(keys)}."
                )
            X, y = archive["X"], archive[target]
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"cannot read dataset {name!r} ({path}): {one_line(error, typed=True, squash=True)}") from error
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise DataError(
            f"dataset {name!r} needs a 2-D 'X' and a 1-D {target!r} of equal length, "
            f"but got shapes {X.shape} and {y.shape}."
        )
    if X.size == 0:
        raise DataError(f"dataset {name!r} ({path}) has no rows or no features.")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise DataError(f"dataset {name!r} has non-numeric features (dtype {X.dtype}); encode them as numbers.")
    _check_finite(name, X, [f"x{j}" for j in range(X.shape[1])], pd.Series(y))
    return X, y


def _check_finite(name: str, X: np.ndarray, features: list[str], target: pd.Series) -> None:
    if np.issubdtype(X.dtype, np.floating):
        bad = ~np.isfinite(X)
        if bad.any():
            columns = [features[j] for j in np.flatnonzero(bad.any(axis=0))]
            raise DataError(
                f"dataset {name!r} has NaN or infinite features in {int(bad.any(axis=1).sum())} rows "
                f"(columns: {_names(columns)}); remove or impute them."
            )
    missing = target.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(target) and not pd.api.types.is_bool_dtype(target):
        missing = missing | ~np.isfinite(target.to_numpy(dtype=np.float64))
    if missing.any():
        raise DataError(
            f"dataset {name!r} has NaN or infinite targets in {int(missing.sum())} rows "
            f"(column: {target.name}); remove those rows."
        )


def _encode_target(source: DatasetSource, y: np.ndarray) -> tuple[str, np.ndarray, tuple[str, ...]]:
    """Infer the task if unknown; encode class labels as 0..k-1 (sorted)."""
    numeric = np.issubdtype(y.dtype, np.number) and y.dtype != bool
    task = source.task or ("regression" if np.issubdtype(y.dtype, np.floating) else "classification")
    if task == "regression":
        if not numeric:
            raise DataError(
                f"dataset {source.name!r} is a regression task but its target {source.target!r} is not numeric "
                f"(dtype {y.dtype}); pass task='classification'."
            )
        return task, y.astype(np.float64), ()
    codes, labels = pd.factorize(pd.Series(y), sort=True)
    if len(labels) < 2:
        raise DataError(
            f"dataset {source.name!r} has a single class ({labels.tolist()[0]!r}); classification needs two or more."
        )
    return task, codes.astype(np.int64), tuple(str(label) for label in labels)


