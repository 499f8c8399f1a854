"""The training-data fingerprint a served model is checked against.

A :class:`Reference` holds what serving needs to know about the training data:
the schema (feature names and dtypes), a sha256 of the training arrays, and per
feature the mean, std, quantile bin edges with the training proportion in each bin
(for PSI) and a sample of raw values (for the Kolmogorov–Smirnov test). It is
stored as JSON beside the model (``frugalml_reference.json``).

Bins are ``(-inf, e1], (e1, e2], ..., (e_k, inf)``; tied quantiles are merged, so a
feature with few distinct values gets fewer bins and its proportions stay exact.

A categorical (text) feature has dtype ``"str"`` and its training ``categories``; the
statistics are over category codes (its index in ``categories``; a category unseen in
training gets ``len(categories)``, outside the training range), so drift and range checks
work on it unchanged. Its bins are one per category plus one for unseen categories, so the
proportions are the training share of each category.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from frugalml.exceptions import DataError

FORMAT_VERSION = 1
CATEGORICAL = "str"  # the dtype of a text feature


def bin_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Inner edges at the training quantiles, duplicates merged."""
    quantiles = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]) if bins > 1 else np.array([])
    return np.unique(quantiles)


def proportions(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of ``values`` in each bin defined by ``edges`` (len(edges) + 1 bins)."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / max(1, len(values))


@dataclass(frozen=True)
class FeatureReference:
    """Training statistics of one feature (or of the model's regression output)."""

    name: str
    dtype: str
    mean: float
    std: float
    min: float
    max: float
    edges: tuple[float, ...]
    proportions: tuple[float, ...]
    sample: tuple[float, ...]
    categories: tuple[str, ...] = ()  # a text feature's training categories; its values are their codes

    @property
    def categorical(self) -> bool:
        return self.dtype == CATEGORICAL

    @classmethod
    def build(cls, name: str, values: np.ndarray, *, bins: int, sample: np.ndarray, dtype: str | None = None,
              categories: Sequence[str] = ()) -> FeatureReference:
        values = np.asarray(values, dtype=np.float64)
        # a text feature: one bin per category, and a last one for categories unseen in training
        edges = np.arange(len(categories)) + 0.5 if categories else bin_edges(values, bins)
        integral = bool(np.all(np.abs(values - np.round(values)) <= 1e-9 * np.maximum(1.0, np.abs(values))))
        return cls(
            name=name, dtype=dtype or ("int64" if integral else "float64"), mean=float(values.mean()),
            std=float(values.std()), min=float(values.min()), max=float(values.max()),
            edges=tuple(edges.tolist()), proportions=tuple(proportions(values, edges).tolist()),
            sample=tuple(np.sort(values[sample]).tolist()),
            categories=tuple(categories),
        )

    @functools.cached_property
    def codes(self) -> dict[str, int]:
        """Category -> its code (its index in ``categories``), built once."""
        return {c: k for k, c in enumerate(self.categories)}


@dataclass(frozen=True)
class Reference:
    """Schema, fingerprint and reference statistics of a model's training data.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(200, 2))
        >>> ref = Reference.build(X, np.zeros(200), ["a", "b"], task="regression", predictions=X[:, 0])
        >>> ref.feature_names
        ('a', 'b')
    """

    task: str
    features: tuple[FeatureReference, ...]
    training_sha256: str
    n_train: int
    classes: tuple[str, ...] = ()
    prediction: FeatureReference | None = None  # regression output statistics
    class_proportions: tuple[float, ...] = ()  # classification: predicted-class shares on train
    data: dict[str, Any] | None = None  # where the data came from (dataset, source, seed)
    calibration: dict[str, Any] | None = None  # a classifier's confidence calibrator (serve._estimate.Calibration)

    @property
    def has_statistics(self) -> bool:
        """False for a schema-only reference (a model served without its training data): no drift."""
        return self.n_train > 0

    @classmethod
    def schema_only(cls, feature_names: Sequence[str], task: str = "regression",
                    dtypes: Sequence[str] | None = None) -> Reference:
        """The feature names and order alone (from a model's signature; ``dtypes``: ``"str"`` for a
        text column), without training statistics."""
        dtypes = dtypes or ["float64"] * len(feature_names)
        features = tuple(FeatureReference(str(n), d, 0.0, 0.0, -np.inf, np.inf, (), (1.0,), ())
                         for n, d in zip(feature_names, dtypes))
        return cls(task=task, features=features, training_sha256="", n_train=0)

    @functools.cached_property  # read on every request: computed once per reference
    def categorical(self) -> tuple[bool, ...]:
        """Per feature: whether it is text (categorical)."""
        return tuple(f.categorical for f in self.features)

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """Rows of raw values (text in categorical columns) as float64, categories as their codes."""
        codes = np.empty(raw.shape, dtype=np.float64)
        for j, feature in enumerate(self.features):
            if feature.categorical:
                index = feature.codes
                codes[:, j] = [index.get(v, len(index)) for v in raw[:, j]]
            else:
                codes[:, j] = raw[:, j].astype(np.float64)
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Coded rows back to raw values (an object array when a feature is categorical)."""
        if not any(self.categorical):
            return codes
        raw = codes.astype(object)
        for j, feature in enumerate(self.features):
            if feature.categorical and feature.categories:
                known = np.clip(codes[:, j].astype(np.int64), 0, len(feature.categories) - 1)
                raw[:, j] = np.asarray(feature.categories, dtype=object)[known]
        return raw

    @functools.cached_property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def schema(self) -> list[dict[str, str]]:
        return [{"name": f.name, "dtype": f.dtype} for f in self.features]

    @property
    def means(self) -> np.ndarray:
        return np.array([f.mean for f in self.features])

    @property
    def sample_inputs(self) -> np.ndarray:
        """Rows of training-range values, one column per feature, to time predictions on (raw: text
        for a categorical feature). Each column is that feature's sorted sample, so a row is not a
        training row: not for statistics."""
        return self.decode(np.asarray([f.sample for f in self.features], dtype=np.float64).T)

    def typical_row(self) -> np.ndarray:
        """One raw row: each feature's training mean, or its median category (zeros without statistics)."""
        if not self.has_statistics:
            return self.decode(np.zeros((1, len(self.features))))[0]
        codes = [float(np.median(f.sample)) if f.categorical else f.mean for f in self.features]
        return self.decode(np.asarray([codes]))[0]

    @classmethod
    def build(
        cls,
        X: np.ndarray,
        y: np.ndarray,
        feature_names: Sequence[str],
        *,
        task: str,
        predictions: np.ndarray,
        classes: Sequence[str] = (),
        bins: int = 10,
        sample_size: int = 1000,
        seed: int = 0,
        hashed: Sequence[np.ndarray] | None = None,
        data: dict[str, Any] | None = None,
        calibration: dict[str, Any] | None = None,
        categories: Mapping[str, Sequence[str]] | None = None,
    ) -> Reference:
        """Fingerprint raw training features ``X`` and the model's ``predictions`` on them.

        ``hashed`` are the arrays the sha256 covers (default ``X`` and ``y``): pass the
        arrays the model was actually fitted on. ``categories``: per text feature, its
        categories; ``X`` then holds their codes (:func:`encode_table`).
        """
        categories = categories or {}
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(X) == 0 or X.shape[1] != len(feature_names):
            raise DataError(
                f"reference data must be 2-D with one column per feature name, but got shape {X.shape} "
                f"for {len(feature_names)} names."
            )
        rng = np.random.default_rng(seed)
        sample = rng.choice(len(X), size=min(sample_size, len(X)), replace=False)
        features = tuple(
            FeatureReference.build(str(name), X[:, j], bins=bins, sample=sample,
                                   **({"dtype": CATEGORICAL, "categories": categories[name]} if name in categories
                                      else {}))
            for j, name in enumerate(feature_names)
        )
        prediction, class_proportions = None, ()
        if task == "regression":
            prediction = FeatureReference.build("prediction", predictions, bins=bins, sample=sample, dtype="float64")
        else:
            codes = np.searchsorted(np.asarray(classes), np.asarray(predictions).astype(str))
            class_proportions = tuple((np.bincount(codes, minlength=len(classes)) / len(codes)).tolist())
        return cls(
            task=task, features=features, training_sha256=sha256_arrays(*(hashed if hashed is not None else (X, y))),
            n_train=len(X), classes=tuple(str(c) for c in classes), prediction=prediction,
            class_proportions=class_proportions, data=data, calibration=calibration,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reference:
        data = {k: v for k, v in data.items() if k != "format_version"}
        features = tuple(FeatureReference(**_tuples(f)) for f in data.pop("features"))
        prediction = data.pop("prediction")
        return cls(
            features=features, prediction=FeatureReference(**_tuples(prediction)) if prediction else None,
            classes=tuple(data.pop("classes", ())), class_proportions=tuple(data.pop("class_proportions", ())),
            **data,
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict()))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Reference:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DataError(f"cannot read the model's reference statistics {str(path)!r}: {error}") from error


def _tuples(data: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


def encode_table(frame: Any) -> tuple[np.ndarray, dict[str, tuple[str, ...]]]:
    """A table's columns as float64 (text columns as codes into their sorted categories) and the
    categories per text column; a text column with missing values is refused."""
    categories: dict[str, tuple[str, ...]] = {}
    columns = []
    for name in frame.columns:
        column = frame[name]
        if column.dtype.kind in "biuf":
            columns.append(column.to_numpy(dtype=np.float64))
            continue
        if column.isna().any():
            raise DataError(f"text column {str(name)!r} has {int(column.isna().sum())} missing values; fill them "
                            "(e.g. with a category such as 'missing') before fingerprinting.")
        values = column.astype(str).to_numpy()
        categories[str(name)] = tuple(sorted(set(values.tolist())))
        index = {c: k for k, c in enumerate(categories[str(name)])}
        columns.append(np.array([index[v] for v in values], dtype=np.float64))
    return np.column_stack(columns) if columns else np.empty((len(frame), 0)), categories


def sha256_arrays(*arrays: np.ndarray) -> str:
    """sha256 over each array's dtype, shape and C-ordered bytes (text as fixed-width unicode)."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.asarray(array)
        array = np.ascontiguousarray(array.astype(str) if array.dtype == object else array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array)
    return digest.hexdigest()
