"""Text (categorical) feature columns of a table: checked once, then one-hot encoded.

A column that is not numeric (text, pandas ``category``, dates) is one-hot encoded
with scikit-learn's ``OneHotEncoder`` inside a ``ColumnTransformer``. The categories
are the training split's, sorted; a category seen only later (in the test split or at
serving time) is ignored: all of its one-hot columns are 0. The encoded columns are the
numeric ones in table order, then one block per text column in table order.

The same :func:`make_encoder` encodes the prepared split and, fitted on the raw training
rows, becomes the first step of the model ``frugalml register`` saves, so the served
model takes the raw text. It selects columns by position, so it takes an object array
(what serving passes) as well as a DataFrame.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from frugalml.exceptions import DataError

#: the most distinct values a text column may have to be one-hot encoded (an id column has more)
MAX_CATEGORIES = 100


def text_columns(frame: pd.DataFrame, features: Sequence[Any]) -> list[Any]:
    """The feature columns that are not numeric (booleans count as numbers)."""
    return [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]


def check_text_columns(name: str, frame: pd.DataFrame, columns: Sequence[Any]) -> None:
    """A one-line :class:`DataError` for a text column with missing values or too many distinct values."""
    for column in columns:
        values = frame[column]
        missing = int(values.isna().sum())
        if missing:
            raise DataError(
                f"dataset {name!r} has missing values in {missing} rows of text column {str(column)!r}; fill them "
                "(e.g. with a category such as 'missing') or drop those rows."
            )
        distinct = int(values.astype(str).nunique())
        if distinct > MAX_CATEGORIES:
            raise DataError(
                f"dataset {name!r} text column {str(column)!r} has {distinct} distinct values, more than the "
                f"{MAX_CATEGORIES} one-hot encoding takes (an id or a timestamp?); drop it or group its values "
                "into fewer categories."
            )


def raw_rows(frame: pd.DataFrame, columns: Sequence[Any], text: Sequence[Any]) -> np.ndarray:
    """The table as an object array: text columns as ``str``, the others as ``float``."""
    raw = np.empty((len(frame), len(columns)), dtype=object)
    for j, column in enumerate(columns):
        values = frame[column]
        raw[:, j] = values.astype(str).to_numpy(dtype=object) if column in text else values.to_numpy(dtype=np.float64)
    return raw


def training_categories(raw_train: np.ndarray, positions: Sequence[int]) -> list[list[str]]:
    """Per text column (by position), the sorted categories of the training rows."""
    return [sorted({str(v) for v in raw_train[:, j]}) for j in positions]


def make_encoder(n_columns: int, categories: Mapping[int, Sequence[str]]) -> Any:
    """An unfitted ``ColumnTransformer``: numeric columns passed through, each text column (by its
    position) one-hot encoded over its ``categories``, unknown categories ignored."""
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    numeric = [j for j in range(n_columns) if j not in categories]
    onehot = OneHotEncoder(categories=[list(c) for c in categories.values()], handle_unknown="ignore",
                           sparse_output=False, dtype=np.float64)
    return ColumnTransformer([("numeric", "passthrough", numeric), ("text", onehot, list(categories))],
                             sparse_threshold=0.0)


def encoded_names(feature_names: Sequence[str], categories: Mapping[str, Sequence[str]]) -> list[str]:
    """The encoded columns' names: the numeric features, then ``<column>=<category>`` per text column."""
    numeric = [n for n in feature_names if n not in categories]
    return [*numeric, *(f"{n}={c}" for n in feature_names if n in categories for c in categories[n])]
