"""The training-data fingerprint a served model is checked against.

A :class:`Reference` holds what serving needs to know about the training data:
the schema (feature names and dtypes), a sha256 of the training arrays, and per
feature the mean, std, quantile bin edges with the training proportion in each bin
(for PSI) and a sample of raw values (for the Kolmogorov–Smirnov test). It is
stored as JSON beside the model (``frugalml_reference.json``).

Bins are ``(-inf, e1], (e1, e2], ..., (e_k, inf)``; tied quantiles are merged, so a
feature with few distinct values gets fewer bins and its proportions stay exact.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from frugalml.exceptions import DataError

FORMAT_VERSION = 1


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

    @classmethod
    def build(cls, name: str, values: np.ndarray, *, bins: int, sample: np.ndarray, dtype: str | None = None
              ) -> FeatureReference:
        values = np.asarray(values, dtype=np.float64)
        edges = bin_edges(values, bins)
        integral = bool(np.all(np.abs(values - np.round(values)) <= 1e-9 * np.maximum(1.0, np.abs(values))))
        return cls(
            name=name, dtype=dtype or ("int64" if integral else "float64"), mean=float(values.mean()),
            std=float(values.std()), min=float(values.min()), max=float(values.max()),
            edges=tuple(edges.tolist()), proportions=tuple(proportions(values, edges).tolist()),
            sample=tuple(np.sort(values[sample]).tolist()),
        )


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
    def schema_only(cls, feature_names: Sequence[str], task: str = "regression") -> Reference:
        """The feature names and order alone (from a model's signature), without training statistics."""
        features = tuple(FeatureReference(str(n), "float64", 0.0, 0.0, -np.inf, np.inf, (), (1.0,), ())
                         for n in feature_names)
        return cls(task=task, features=features, training_sha256="", n_train=0)

    @property
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
        """Rows of training-range values, one column per feature, to time predictions on. Each
        column is that feature's sorted sample, so a row is not a training row: not for statistics."""
        return np.asarray([f.sample for f in self.features], dtype=np.float64).T

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
    ) -> Reference:
        """Fingerprint raw training features ``X`` and the model's ``predictions`` on them.

        ``hashed`` are the arrays the sha256 covers (default ``X`` and ``y``): pass the
        arrays the model was actually fitted on.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(X) == 0 or X.shape[1] != len(feature_names):
            raise DataError(
                f"reference data must be 2-D with one column per feature name, but got shape {X.shape} "
                f"for {len(feature_names)} names."
            )
        rng = np.random.default_rng(seed)
        sample = rng.choice(len(X), size=min(sample_size, len(X)), replace=False)
        features = tuple(
            FeatureReference.build(str(name), X[:, j], bins=bins, sample=sample) for j, name in enumerate(feature_names)
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


def sha256_arrays(*arrays: np.ndarray) -> str:
    """sha256 over each array's dtype, shape and C-ordered bytes."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array)
    return digest.hexdigest()
