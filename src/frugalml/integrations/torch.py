"""A plain PyTorch training loop as a frugalml trial: :class:`Batches` plans the run and
counts each step with the loss tensor you pass back.

Example::

    from frugalml.integrations.torch import Batches

    def train(trial, epochs=3):
        model, optimizer, loader = build(trial.params)      # your model, optimiser and DataLoader
        batches = Batches(trial, loader, epochs)            # plans epochs x len(loader) steps
        for X, y in batches:
            optimizer.zero_grad(); loss = loss_fn(model(X), y); loss.backward(); optimizer.step()
            if batches.step(loss):                          # True when an evaluation window ends
                trial.report(val_loss=evaluate(model))
        trial.log_model(model, input_example=X[:3].numpy())

Per step this is ``loss.item()`` (a device sync on a GPU), the batch's ``len`` and
``Trial.step``: 7-25 us on a 2-core CPU VM, 0.1-0.5 % of a 5 ms step
(benchmarks/adapter_overhead_torch.py). A budget needs nothing from the loop: the
watchdog stops the worker; with the in-process executor the stop is raised from
``batches.step`` (or your ``trial.report``) and ends the loop. A CUDA out-of-memory
error needs nothing either: every executor records it as a ``max_gpu_memory_mb`` stop.

When the process already uses CUDA as the loop starts, PyTorch's allocator peak
(``torch.cuda.max_memory_allocated`` on the current device, MB, reset at the start) is
recorded at every window end as ``trial.set_info(torch_gpu_peak_allocated_mb=...)``,
beside the watchdog's NVML ``gpu_memory_mb``, which is larger: NVML's per-process
memory includes the CUDA context and the allocator's cached, unallocated blocks.

This module also holds what the Lightning, Keras and Transformers callbacks share
(:class:`_TrialCalls`); it imports PyTorch only when a :class:`Batches` is made.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Iterable, Iterator, Mapping

from frugalml.exceptions import TrialUsageError
from frugalml.integrations._frameworks import is_stop, require, require_trial
from frugalml.metrics import ACCURACY, RMSE, VAL_LOSS
from frugalml.validation import POSITIVE_INT, check
from frugalml.units import to_mb

__all__ = ["Batches"]


class Batches:
    """Iterate ``epochs`` passes over ``loader`` as one planned frugalml trial.

    Args:
        trial: the :class:`frugalml.Trial` your training function receives.
        loader: a ``torch.utils.data.DataLoader`` (or any re-iterable of batches).
        epochs: passes over ``loader``.
        steps_per_epoch: batches per pass, for a loader without ``len`` (an
            ``IterableDataset``); an epoch then ends after this many batches.

    Iterating plans ``epochs * steps_per_epoch`` steps and starts the step clock (set-up
    before the loop is not step time). :attr:`epoch` is the pass under way, from 0.
    """

    def __init__(self, trial: Any, loader: Iterable[Any], epochs: int = 1, *,
                 steps_per_epoch: int | None = None) -> None:
        require("torch", "2.2", "torch")
        self.trial = require_trial(trial, "Batches")
        self.loader = loader
        self.epochs = check("Batches", "epochs", epochs, POSITIVE_INT)
        if steps_per_epoch is None:
            try:
                steps_per_epoch = len(loader)  # type: ignore[arg-type]
            except TypeError:
                raise TrialUsageError(
                    f"Batches cannot plan a run over a {type(loader).__name__} without len(); pass "
                    "steps_per_epoch=N (batches per epoch)."
                ) from None
        self.steps_per_epoch = check("Batches", "steps_per_epoch", steps_per_epoch, POSITIVE_INT)
        self.epoch = 0
        self._n_samples = 1
        self._cuda = False  # the process used CUDA when the loop started: its allocator peak is recorded

    def __len__(self) -> int:
        return self.epochs * self.steps_per_epoch

    def __iter__(self) -> Iterator[Any]:
        self.trial.plan(len(self))
        self._cuda = _reset_cuda_peak()
        self.trial.reset_clock()
        for epoch in range(self.epochs):
            self.epoch = epoch
            for batch in itertools.islice(self.loader, self.steps_per_epoch):
                self._n_samples = _batch_size(batch)
                yield batch
        if self._cuda:
            _record_cuda_peak(self.trial)

    def step(self, loss: Any, n_samples: int | None = None) -> bool:
        """Count the step of the batch just yielded; ``loss``: a scalar tensor or a float.

        ``n_samples`` defaults to the batch's length (its first tensor's, for a tuple
        or dict). Returns True when an evaluation window ends: call ``trial.report``.
        """
        due = self.trial.step(_scalar(loss), self._n_samples if n_samples is None else n_samples)
        if due and self._cuda:
            _record_cuda_peak(self.trial)
        return due


def _reset_cuda_peak() -> bool:
    """Reset PyTorch's peak-memory statistics of the current CUDA device; False (and nothing
    done) when this process has not initialised CUDA."""
    import torch

    if not torch.cuda.is_initialized():
        return False
    torch.cuda.reset_peak_memory_stats()
    return True


def _record_cuda_peak(trial: Any) -> None:
    """``trial.set_info(torch_gpu_peak_allocated_mb=...)``: the allocator's peak since the reset
    (a host-side counter, no device sync)."""
    import torch

    trial.set_info(torch_gpu_peak_allocated_mb=to_mb(torch.cuda.max_memory_allocated()))


def _scalar(loss: Any) -> float:
    """A loss tensor (or NumPy scalar, or number) as a float; ``.item()`` does not warn about autograd."""
    return loss.item() if hasattr(loss, "item") else float(loss)


def _batch_size(batch: Any) -> int:
    """Rows in a batch: its length, or its first element's for a tuple/list/dict batch (1 if none)."""
    if isinstance(batch, Mapping):
        batch = next(iter(batch.values()), None)
    elif isinstance(batch, (tuple, list)):
        batch = batch[0] if batch else None
    try:
        return len(batch)  # type: ignore[arg-type]
    except TypeError:
        return 1


# The callbacks' shared part: the trial calls, and a stop kept until the framework's loop ended.

# Framework metric names (after the validation prefix) -> frugalml's names.
_NAMES = {"loss": VAL_LOSS, "acc": ACCURACY, "accuracy": ACCURACY, "sparse_categorical_accuracy": ACCURACY,
          "categorical_accuracy": ACCURACY, "binary_accuracy": ACCURACY, "root_mean_squared_error": RMSE}



def _validation_metrics(logs: Mapping[str, Any], prefix: str, skip: frozenset[str] = frozenset()) -> dict[str, float]:
    """The scalar metrics named ``prefix + name`` in ``logs``, under frugalml's names (``val_loss``, ``accuracy``)."""
    metrics = {}
    for key, value in logs.items():
        if not key.startswith(prefix) or key[len(prefix):] in skip:
            continue
        try:
            metrics[_NAMES.get(key[len(prefix):], key[len(prefix):])] = float(value)
        except (TypeError, ValueError, RuntimeError):  # not a scalar (a tensor of several values, a string)
            pass
    return metrics


class _TrialCalls:
    """What a framework callback does to its trial; a stop raised by the trial is kept in :attr:`stop`
    (the callback then asks the framework to stop) and raised again by :meth:`raise_stop` at the end."""

    def __init__(self, trial: Any, owner: str) -> None:
        self.trial = require_trial(trial, owner)
        self.stop: BaseException | None = None

    def plan(self, total_steps: Any) -> None:
        """Plan ``total_steps`` when the framework knows it (a finite count >= 1)."""
        if isinstance(total_steps, float) and math.isfinite(total_steps):
            total_steps = int(total_steps)
        if isinstance(total_steps, int) and not isinstance(total_steps, bool) and total_steps >= 1:
            self.trial.plan(total_steps)
        self.trial.reset_clock()

    def step(self, loss: float, n_samples: int) -> None:
        if self.stop is None:
            try:
                self.trial.step(loss, n_samples)
            except BaseException as error:
                if not is_stop(error):
                    raise
                self.stop = error

    def report(self, metrics: Mapping[str, float]) -> None:
        if self.stop is None and metrics:
            try:
                self.trial.report(**metrics)
            except BaseException as error:
                if not is_stop(error):
                    raise
                self.stop = error

    def raise_stop(self) -> None:
        """Raise the kept stop, so the executor records the trial as stopped."""
        if self.stop is not None:
            stop, self.stop = self.stop, None
            raise stop
