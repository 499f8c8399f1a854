"""Training functions for the PyTorch-stack adapter tests: each framework's own loop on real data.

Module level so that worker processes can import them. mnist (a few thousand rows,
pixels scaled to [0, 1]) for PyTorch, Lightning and Keras; diabetes quantised into
tokens for a tiny BERT under the Hugging Face Trainer. ``hidden`` sizes the model:
the studies pair a small one with one whose weights and optimiser state take
hundreds of MB, so a memory budget between them stops only the large one.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before any import of keras, here or in a worker

import numpy as np
import torch

MNIST_ROWS = 3000  # training rows; the next VAL_ROWS rows validate
VAL_ROWS = 500
REFERENCE_ROWS = 500  # training rows logged as the served model's reference (784 columns each)
BINS = 8  # diabetes: quantiles per feature, one token each
ENDED: dict[str, dict] = {}  # framework -> its loop's own state when it returned (read by in-process tests)


def mnist(rows: int = MNIST_ROWS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first ``rows`` mnist rows (and the next VAL_ROWS to validate) as float32 in [0, 1] and int64 labels."""
    data = np.load(os.path.join(os.environ["FRUGALML_DATA_DIR"], "mnist_784.npz"))
    X = data["X"][: rows + VAL_ROWS].astype(np.float32) / 255.0
    y = data["y"][: rows + VAL_ROWS].astype(np.int64)
    return X[:rows], y[:rows], X[rows:], y[rows:]


def mlp(hidden: int):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(784, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))


def torch_mlp(trial, epochs: int = 2, batch_size: int = 64) -> None:
    """A plain PyTorch loop over a DataLoader, counted by ``Batches``; evaluates when a window ends."""
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from frugalml.integrations.torch import Batches

    torch.set_num_threads(1)
    X, y, X_val, y_val = mnist()
    loader = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(y)), batch_size=batch_size,
                        shuffle=True, generator=torch.Generator().manual_seed(0))
    model = mlp(trial.params["hidden"])
    optimizer = torch.optim.Adam(model.parameters(), lr=trial.params["lr"])
    batches, seen = Batches(trial, loader, epochs), 0
    try:
        for X_batch, y_batch in batches:
            seen += 1
            optimizer.zero_grad()
            loss = F.cross_entropy(model(X_batch), y_batch)
            loss.backward()
            optimizer.step()
            if batches.step(loss):
                with torch.no_grad():
                    logits = model(torch.from_numpy(X_val))
                trial.report(val_loss=float(F.cross_entropy(logits, torch.from_numpy(y_val))),
                             accuracy=float((logits.argmax(1).numpy() == y_val).mean()))
    finally:
        ENDED["torch"] = {"steps": seen, "stop_flag": None}  # a plain loop: step() or report() raises the stop
    trial.log_model(model.eval(), input_example=X_val[:3])
    trial.log_reference(X[:REFERENCE_ROWS], y[:REFERENCE_ROWS])  # a sample of the training inputs


def _lit_mlp() -> type:
    """The LightningModule class, made on first use so that only Lightning's trials import Lightning (~10 s)."""
    import lightning as L
    import torch.nn.functional as F

    class LitMLP(L.LightningModule):
        """The mnist MLP as a LightningModule: logs ``val_loss`` and ``val_acc`` when validating."""

        def __init__(self, hidden: int, lr: float) -> None:
            super().__init__()
            self.net, self.lr = mlp(hidden), lr

        def forward(self, X):
            return self.net(X)

        def training_step(self, batch, batch_idx):
            X, y = batch
            return F.cross_entropy(self(X), y)

        def validation_step(self, batch, batch_idx):
            X, y = batch
            logits = self(X)
            self.log("val_loss", F.cross_entropy(logits, y))
            self.log("val_acc", (logits.argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.lr)

    LitMLP.__module__, LitMLP.__qualname__ = __name__, "LitMLP"  # saved and served by reference, as module level
    return LitMLP


def __getattr__(name: str):
    """``torch_trainers.LitMLP``, made when first asked for (by a trial, or by torch.load where it is served)."""
    if name == "LitMLP":
        if "LitMLP" not in globals():
            globals()["LitMLP"] = _lit_mlp()
        return globals()["LitMLP"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def lightning_mlp(trial, epochs: int = 2, batch_size: int = 64) -> None:
    """A LightningModule fitted by a Trainer with ``FrugalmlCallback``; validates every epoch."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from frugalml.integrations.lightning import FrugalmlCallback

    torch.set_num_threads(1)
    X, y, X_val, y_val = mnist()
    train_loader = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(y)), batch_size=batch_size,
                              shuffle=True, generator=torch.Generator().manual_seed(0))
    val_loader = DataLoader(TensorDataset(torch.from_numpy(X_val), torch.from_numpy(y_val)), batch_size=250)
    model = __getattr__("LitMLP")(trial.params["hidden"], trial.params["lr"])
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, callbacks=[FrugalmlCallback(trial)],
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    try:
        trainer.fit(model, train_loader, val_loader)
    finally:
        ENDED["lightning"] = {"steps": trainer.global_step, "stop_flag": trainer.should_stop}
    trial.log_model(model.eval(), input_example=X_val[:3])
    trial.log_reference(X[:REFERENCE_ROWS], y[:REFERENCE_ROWS])  # a sample of the training inputs


def keras_mlp(trial, epochs: int = 2, batch_size: int = 64) -> None:
    """A Keras model's ``fit`` with ``FrugalmlCallback`` and validation data."""
    import keras

    from frugalml.integrations.keras import FrugalmlCallback

    torch.set_num_threads(1)
    keras.utils.set_random_seed(0)
    X, y, X_val, y_val = mnist()
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(trial.params["hidden"], activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(trial.params["lr"]), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    try:
        model.fit(X, y, batch_size=batch_size, epochs=epochs, validation_data=(X_val, y_val),
                  callbacks=[FrugalmlCallback(trial)], verbose=0)
    finally:
        ENDED["keras"] = {"steps": int(model.optimizer.iterations), "stop_flag": model.stop_training}
    trial.log_model(model)  # no input_example: MLflow 3.17's mlflow.keras.save_model fails to write one
    trial.log_reference(X[:REFERENCE_ROWS], y[:REFERENCE_ROWS])  # a sample of the training inputs


def diabetes() -> tuple:
    """The diabetes features (a DataFrame) and labels 0/1 (tested_positive = 1)."""
    import pandas as pd

    frame = pd.read_csv(os.path.join(os.environ["FRUGALML_DATA_DIR"], "diabetes.csv.gz"))
    return frame.drop(columns="target"), (frame["target"] == "tested_positive").to_numpy(np.int64)


def tokens(rows: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each row as [CLS] + one token per feature: 2 + feature * BINS + the feature's quantile bin."""
    bins = np.stack([np.searchsorted(edges[j], rows[:, j], side="right") for j in range(rows.shape[1])], axis=1)
    ids = 2 + np.arange(rows.shape[1]) * BINS + np.clip(bins, 0, BINS - 1)
    return np.concatenate([np.ones((len(rows), 1), np.int64), ids], axis=1).astype(np.int64)


class TokenClassifier:
    """The served model: ``predict(rows)`` quantises the raw features into tokens and returns the BERT's labels."""

    def __init__(self, model, edges: np.ndarray) -> None:
        self.model, self.edges = model.eval(), edges

    def predict(self, rows) -> np.ndarray:
        ids = torch.from_numpy(tokens(np.asarray(rows, dtype=np.float64), self.edges))
        with torch.no_grad():
            return self.model(input_ids=ids).logits.argmax(-1).numpy()


def accuracy(prediction) -> dict:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def transformers_bert(trial, epochs: int = 3, batch_size: int = 32) -> None:
    """A 2-layer BERT (built from a config: no download) trained by a ``Trainer`` with ``FrugalmlCallback``."""
    import tempfile

    from transformers import BertConfig, BertForSequenceClassification, PrinterCallback, Trainer, TrainingArguments

    from frugalml.integrations.transformers import FrugalmlCallback

    torch.set_num_threads(1)
    X, y = diabetes()
    order = np.random.default_rng(0).permutation(len(X))
    train_rows, val_rows = order[:600], order[600:]
    values = X.to_numpy(np.float64)
    edges = np.quantile(values[train_rows], np.linspace(0, 1, BINS + 1)[1:-1], axis=0).T
    ids = tokens(values, edges)
    train_set = [{"input_ids": ids[i], "labels": y[i]} for i in train_rows]
    val_set = [{"input_ids": ids[i], "labels": y[i]} for i in val_rows]
    hidden = trial.params["hidden"]
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=2 + X.shape[1] * BINS, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=4 * hidden, max_position_embeddings=16, num_labels=2))
    with tempfile.TemporaryDirectory() as output:
        args = TrainingArguments(output, num_train_epochs=epochs, per_device_train_batch_size=batch_size,
                                 learning_rate=trial.params["lr"], eval_strategy="epoch", save_strategy="no",
                                 logging_steps=1, report_to=[], use_cpu=True, disable_tqdm=True, seed=0)
        trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=val_set,
                          compute_metrics=accuracy, callbacks=[FrugalmlCallback(trial)])
        trainer.remove_callback(PrinterCallback)  # it prints every log line (disable_tqdm=True adds it)
        try:
            trainer.train()
        finally:
            ENDED["transformers"] = {"steps": trainer.state.global_step,
                                     "stop_flag": trainer.control.should_training_stop}
    trial.log_model(TokenClassifier(trainer.model, edges), input_example=X.head(3))
    trial.log_reference(X.iloc[train_rows], y[train_rows])
