"""A Keras 3 ``model.fit`` as a frugalml trial: :class:`FrugalmlCallback`.

Example::

    from frugalml.integrations.keras import FrugalmlCallback  # before keras: no backend set -> torch

    def train(trial, epochs=3):
        model = build_model(trial.params["hidden"])         # a keras.Model
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(X, y, epochs=epochs, validation_data=(X_val, y_val), callbacks=[FrugalmlCallback(trial)])
        trial.log_model(model)

The callback plans ``epochs x steps per epoch`` (per ``steps_per_execution`` call);
each training batch is one frugalml step, with that batch's own loss and row count
(read from the model's loss tracker: Keras's batch logs hold the epoch's running
mean). At each epoch's end the ``val_*`` metrics are reported (``val_loss`` as it is,
``val_accuracy`` as ``accuracy``). Budgets need nothing from Keras (the watchdog stops
the worker); a stop raised by the in-process executor sets ``model.stop_training`` so
Keras ends ``fit`` its own way, and is raised again from ``on_train_end`` so the trial
is recorded as stopped. Per batch: two reads of the tracker's variables and
``Trial.step``, 25-40 us on a 2-core CPU VM (0.5-0.8 % of a 5 ms step;
benchmarks/adapter_overhead_torch.py).

The ``keras`` extra installs Keras with PyTorch: when no backend is chosen
(``KERAS_BACKEND``) and TensorFlow is not installed, importing this module before
Keras selects the torch backend.
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Any

from frugalml.integrations._frameworks import require
from frugalml.integrations.torch import _TrialCalls, _validation_metrics

if "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("tensorflow") is None:
    os.environ["KERAS_BACKEND"] = "torch"  # Keras 3 defaults to TensorFlow and fails to import without it
_keras = require("keras", "3.0", "keras")

__all__ = ["FrugalmlCallback"]


class FrugalmlCallback(_keras.callbacks.Callback):
    """Reports a Keras ``fit`` to its frugalml trial: plan, one step per batch, validation metrics per epoch.

    Args:
        trial: the :class:`frugalml.Trial` your training function receives.
    """

    def __init__(self, trial: Any) -> None:
        super().__init__()
        self._calls = _TrialCalls(trial, "FrugalmlCallback")
        self._tracker: Any = None
        self._total = self._count = 0.0

    @property
    def trial(self) -> Any:
        return self._calls.trial

    def on_train_begin(self, logs: dict | None = None) -> None:
        epochs, steps = self.params.get("epochs"), self.params.get("steps")
        per_call = max(1, int(getattr(self.model, "steps_per_execution", 1) or 1))
        self._calls.plan(epochs * math.ceil(steps / per_call) if epochs and steps else None)
        self._tracker = getattr(self.model, "_loss_tracker", None)  # the Mean of the loss, weighted by batch rows

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._total = self._count = 0.0  # fit resets the loss tracker before each epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        tracker = self._tracker
        count = float(tracker.count) if tracker is not None else 0.0
        if count < self._count:  # the tracker was reset meanwhile (an evaluate from another callback)
            self._total = self._count = 0.0
        if count > self._count:
            total = float(tracker.total)
            loss, n_samples = (total - self._total) / (count - self._count), round(count - self._count)
            self._total, self._count = total, count
        else:  # a custom train_step that does not update the tracker
            loss, n_samples = float((logs or {}).get("loss", math.nan)), 1
        self._calls.step(loss, n_samples)
        if self._calls.stop is not None:
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._calls.report(_validation_metrics(logs or {}, "val_"))
        if self._calls.stop is not None:
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        self._calls.raise_stop()
