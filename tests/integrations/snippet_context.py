"""What the README's adapter snippets leave to the reader (data, a model builder), so they run as written.

Each ``context_<framework>()`` returns the names its snippet uses besides its own
imports, built on small slices of real data (diabetes, mnist) from ../shared/data.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere

import numpy as np

import boosting_trainers  # noqa: F401 - the boosting tests' helpers (same data conventions)
import torch_trainers


def _diabetes() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = torch_trainers.diabetes()
    X = X.to_numpy(np.float64)
    return X[:600], y[:600], X[600:], y[600:]


def context_tabular() -> dict:
    X, y, X_val, y_val = _diabetes()
    return {"X": X, "y": y, "X_val": X_val, "y_val": y_val}


def _mnist_small():
    X, y, X_val, y_val = torch_trainers.mnist(rows=512)
    return X, y, X_val[:200], y_val[:200]


def context_torch() -> dict:
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    X_all, y_all, X_val, y_val = _mnist_small()

    def build(params):
        model = torch_trainers.mlp(params["hidden"])
        loader = DataLoader(TensorDataset(torch.from_numpy(X_all), torch.from_numpy(y_all)), batch_size=64)
        return model, torch.optim.Adam(model.parameters(), lr=params["lr"]), loader

    def evaluate(model):
        with torch.no_grad():
            return float(F.cross_entropy(model(torch.from_numpy(X_val)), torch.from_numpy(y_val)))

    return {"build": build, "loss_fn": F.cross_entropy, "evaluate": evaluate}


def context_lightning() -> dict:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    X, y, X_val, y_val = _mnist_small()
    return {"MyLightningModule": torch_trainers.LitMLP, "X_val": X_val,
            "train_loader": DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(y)), batch_size=64),
            "val_loader": DataLoader(TensorDataset(torch.from_numpy(X_val), torch.from_numpy(y_val)), batch_size=100)}


def context_keras() -> dict:
    import keras

    X, y, X_val, y_val = _mnist_small()

    def build_model(hidden):
        return keras.Sequential([keras.Input((784,)), keras.layers.Dense(hidden, activation="relu"),
                                 keras.layers.Dense(10, activation="softmax")])

    return {"build_model": build_model, "X": X, "y": y, "X_val": X_val, "y_val": y_val}


def context_transformers() -> dict:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    X, y = torch_trainers.diabetes()
    values = X.to_numpy(np.float64)
    edges = np.quantile(values[:500], np.linspace(0, 1, torch_trainers.BINS + 1)[1:-1], axis=0).T
    ids = torch_trainers.tokens(values, edges)

    def build_model(params):
        torch.manual_seed(0)
        return BertForSequenceClassification(BertConfig(
            vocab_size=2 + X.shape[1] * torch_trainers.BINS, hidden_size=16, num_hidden_layers=1,
            num_attention_heads=2, intermediate_size=32, max_position_embeddings=16, num_labels=2))

    return {"build_model": build_model, "tokenizer": edges,
            "MyPredictor": torch_trainers.TokenClassifier,
            "train_set": [{"input_ids": ids[i], "labels": y[i]} for i in range(200)],
            "val_set": [{"input_ids": ids[i], "labels": y[i]} for i in range(500, 600)]}
