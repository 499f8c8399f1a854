"""A Hugging Face ``Trainer`` as a frugalml trial: :class:`FrugalmlCallback`.

Example::

    from transformers import Trainer, TrainingArguments
    from frugalml.integrations.transformers import FrugalmlCallback

    def train(trial, epochs=3):
        args = TrainingArguments("out", num_train_epochs=epochs, eval_strategy="epoch", logging_steps=1,
                                 learning_rate=trial.params["lr"], save_strategy="no", report_to=[])
        trainer = Trainer(model=build_model(trial.params), args=args, train_dataset=train_set,
                          eval_dataset=val_set, callbacks=[FrugalmlCallback(trial)])
        trainer.train()
        trial.log_model(MyPredictor(trainer.model, tokenizer))  # served as pyfunc: predict(rows)

The callback plans ``state.max_steps`` (less any steps resumed from a checkpoint); one
frugalml step is one optimiser step, with ``train_batch_size x gradient accumulation x
processes`` samples and the loss the Trainer last logged (it logs every
``logging_steps``, after the step's callbacks, so a step carries the loss logged since
the previous one; steps without a new log carry none). Each evaluation's metrics are
reported: ``eval_loss`` as ``val_loss``, ``eval_accuracy`` as ``accuracy``, others
without the ``eval_`` prefix (its timings left out). Budgets need nothing from the
Trainer (the watchdog stops the worker); a stop raised by the in-process executor sets
``control.should_training_stop`` so the Trainer ends its own way, and is raised again
from ``on_train_end`` so the trial is recorded as stopped. Per step: ``Trial.step`` and
little else, 2-15 us on a 2-core CPU VM (< 0.3 % of a 5 ms step;
benchmarks/adapter_overhead_torch.py). Transformers 5's ``Trainer`` needs ``accelerate``.
"""

from __future__ import annotations

import math
from typing import Any

from frugalml.integrations._frameworks import require
from frugalml.integrations.torch import _TrialCalls, _validation_metrics

_transformers = require("transformers", "4.40", "transformers")

__all__ = ["FrugalmlCallback"]

_TIMINGS = frozenset({"runtime", "samples_per_second", "steps_per_second", "epoch"})


class FrugalmlCallback(_transformers.TrainerCallback):
    """Reports a ``Trainer`` run to its frugalml trial: plan, one step per optimiser step, eval metrics.

    Args:
        trial: the :class:`frugalml.Trial` your training function receives.
    """

    def __init__(self, trial: Any) -> None:
        self._calls = _TrialCalls(trial, "FrugalmlCallback")
        self._loss = math.nan
        self._samples_per_step = 1

    @property
    def trial(self) -> Any:
        return self._calls.trial

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        batch = getattr(state, "train_batch_size", None) or args.train_batch_size
        self._samples_per_step = int(batch) * args.gradient_accumulation_steps * max(1, args.world_size)
        self._loss = math.nan
        self._calls.plan(state.max_steps - state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self._loss = float(logs["loss"])

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        loss, self._loss = self._loss, math.nan
        self._calls.step(loss, self._samples_per_step)
        if self._calls.stop is not None:
            control.should_training_stop = True
        return control

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any) -> Any:
        self._calls.report(_validation_metrics(metrics or {}, "eval_", skip=_TIMINGS))
        if self._calls.stop is not None:
            control.should_training_stop = True
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._calls.raise_stop()
