"""A tiny PyTorch classifier for the serving tests; module level so worker processes can import it."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd


def diabetes() -> tuple[pd.DataFrame, np.ndarray]:
    """The diabetes features (named columns) and labels 0/1 (tested_positive = 1)."""
    frame = pd.read_csv(os.path.join(os.environ["FRUGALML_DATA_DIR"], "diabetes.csv.gz"))
    return frame.drop(columns="target"), (frame["target"] == "tested_positive").to_numpy("int64")


def torch_classifier(trial, epochs: int = 30, rows: int = 600) -> None:
    """An MLP (batch norm in front: it takes raw values) fitted full-batch on diabetes; logs its logits model."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    torch.set_num_threads(1)
    X, y = diabetes()
    inputs, labels = torch.from_numpy(X.to_numpy("float32")[:rows]), torch.from_numpy(y[:rows])
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(X.shape[1]), torch.nn.Linear(X.shape[1], trial.params["hidden"]),
                                torch.nn.ReLU(), torch.nn.Linear(trial.params["hidden"], 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    trial.plan(epochs)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs), labels)
        loss.backward()
        optimizer.step()
        if trial.step(loss.item(), n_samples=rows):
            trial.report(val_loss=loss.item())
    model.eval()
    trial.log_model(model, input_example=X.to_numpy("float32")[:3])  # a tensor signature, as MLflow infers it
    trial.log_reference(X.iloc[:rows], y[:rows])
