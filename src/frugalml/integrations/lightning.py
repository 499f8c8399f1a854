"""A Lightning ``Trainer`` as a frugalml trial: :class:`FrugalmlCallback`.

Example::

    import lightning as L
    from frugalml.integrations.lightning import FrugalmlCallback

    def train(trial, epochs=3):
        model = MyLightningModule(**trial.params)           # logs "val_loss" (and "val_acc") when validating
        trainer = L.Trainer(max_epochs=epochs, callbacks=[FrugalmlCallback(trial)], logger=False)
        trainer.fit(model, train_loader, val_loader)
        trial.log_model(model, input_example=X_val[:3])

One frugalml step is one optimiser step (the unit of ``trainer.global_step`` and of
``trainer.estimated_stepping_batches``, which the callback plans); its loss is the
``training_step`` loss (summed over accumulated batches) and its samples the batches'
rows. After each validation, ``trainer.callback_metrics`` named ``val_*`` are reported:
``val_loss`` as it is, ``val_acc``/``val_accuracy`` as ``accuracy``, others without the
prefix. Budgets need nothing from Lightning (the watchdog stops the worker); a stop
raised by the in-process executor sets ``trainer.should_stop`` so Lightning ends the
fit its own way (honouring ``min_epochs``/``min_steps``), and is raised again from
``on_train_end`` so the trial is recorded as stopped. Per step: ``loss.item()`` (a sync
on a GPU), the batch's size and ``Trial.step``, 6-15 us on a 2-core CPU VM (0.1-0.3 % of
a 5 ms step; benchmarks/adapter_overhead_torch.py). On a CUDA module, PyTorch's allocator
peak since the fit started is recorded after each validation as
``torch_gpu_peak_allocated_mb`` in the trial's info (see :mod:`frugalml.integrations.torch`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from frugalml.integrations._frameworks import require
from frugalml.integrations.torch import (
    _batch_size, _record_cuda_peak, _reset_cuda_peak, _scalar, _TrialCalls, _validation_metrics,
)

_lightning = require("lightning", "2.2", "lightning")

__all__ = ["FrugalmlCallback"]


class FrugalmlCallback(_lightning.pytorch.Callback):
    """Reports a Lightning fit to its frugalml trial: plan, one step per optimiser step, validation metrics.

    Args:
        trial: the :class:`frugalml.Trial` your training function receives.
    """

    def __init__(self, trial: Any) -> None:
        self._calls = _TrialCalls(trial, "FrugalmlCallback")
        self._global_step = 0
        self._loss = 0.0
        self._samples = 0
        self._cuda = False

    @property
    def trial(self) -> Any:
        return self._calls.trial

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._global_step = trainer.global_step
        self._loss, self._samples = 0.0, 0
        self._cuda = pl_module.device.type == "cuda" and _reset_cuda_peak()
        self._calls.plan(trainer.estimated_stepping_batches - trainer.global_step)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        self._loss += math.nan if loss is None else _scalar(loss)
        self._samples += _batch_size(batch)
        if trainer.global_step == self._global_step:
            return  # accumulating gradients (or a skipped step): no optimiser step yet
        self._global_step = trainer.global_step
        self._calls.step(self._loss, self._samples)
        self._loss, self._samples = 0.0, 0
        if self._calls.stop is not None:
            trainer.should_stop = True

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        if self._cuda:
            _record_cuda_peak(self.trial)
        self._calls.report(_validation_metrics(trainer.callback_metrics, "val_"))
        if self._calls.stop is not None:
            trainer.should_stop = True

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._calls.raise_stop()
