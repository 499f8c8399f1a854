"""GPU memory as a budget every executor enforces the same way.

A trial whose training function runs out of GPU memory broke the GPU memory it had,
whether or not the study set ``max_gpu_memory_mb``: it is recorded as STOPPED by a
system stop of that budget's rule, not as a crash, so the study goes on and the cost
model counts the configuration's GPU memory as censored, like any budget stop. This
module is the one home of that rule:

- :func:`gpu_out_of_memory` recognises the error where the exception object is (in the
  worker process, or in-process), by its class's name and module and its message, with
  no framework imported for it: PyTorch's ``torch.OutOfMemoryError`` (also
  ``torch.cuda.OutOfMemoryError``), the generic ``RuntimeError: CUDA error: out of
  memory`` (and cuBLAS's ``CUBLAS_STATUS_ALLOC_FAILED``), XLA's (JAX) and TensorFlow's
  ``RESOURCE_EXHAUSTED`` / ``ResourceExhaustedError``. A host ``MemoryError`` or the
  CPU allocator's "can't allocate memory" is not a GPU budget and stays a failure.
- :func:`gpu_oom_stop` turns it into the :class:`~frugalml.records.StopInfo` the
  executor records.
- :func:`warn_if_gpu_budget_unmeasurable`: a study with a GPU budget on a machine
  where no GPU can be measured gets a one-line warning.

Example:
    >>> oom = gpu_out_of_memory(RuntimeError("CUDA error: out of memory"))
    >>> oom.message
    'RuntimeError: CUDA error: out of memory'
    >>> gpu_out_of_memory(MemoryError()) is None
    True
"""

from __future__ import annotations

import math
import os
import re
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from frugalml.budgets import budget
from frugalml.exceptions import one_line
from frugalml.metrics import GPU_MEMORY_MB
from frugalml.monitors import GpuMonitor, visible_gpus
from frugalml.records import StopInfo
from frugalml.stopping import SYSTEM, ResourceBudget, StoppingRule
from frugalml.units import to_mb

RULE = "max_gpu_memory_mb"

_SIZE = r"([0-9]+(?:\.[0-9]+)?) ?(bytes|B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)\b"
_TO_MB = {"bytes": 2**-20, "B": 2**-20, "KiB": 2**-10, "KB": 2**-10, "MiB": 1.0, "MB": 1.0,
          "GiB": 2**10, "GB": 2**10, "TiB": 2**20, "TB": 2**20}
# What PyTorch's message says, in its 2.x wording and in the older one:
#   "Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.15 GiB of which 1.19 GiB is free.
#    Including non-PyTorch memory, this process has 77.95 GiB memory in use. Of the allocated memory
#    76.40 GiB is allocated by PyTorch, ..."
#   "Tried to allocate 20.00 MiB (GPU 0; 10.76 GiB total capacity; 9.48 GiB already allocated; ...)"
# and XLA's: "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 4294967296 bytes."
_REQUESTED = (re.compile(r"[Tt]ried to allocate " + _SIZE), re.compile(r"trying to allocate " + _SIZE))
_IN_USE = (re.compile(r"this process has " + _SIZE + " memory in use"), re.compile(_SIZE + " is allocated by PyTorch"),
           re.compile(_SIZE + " already allocated"))
_CAPACITY = (re.compile(r"total capacity of " + _SIZE), re.compile(_SIZE + " total capacity"))
_CUDA_MESSAGES = ("CUDA out of memory", "CUDA error: out of memory", "CUBLAS_STATUS_ALLOC_FAILED")


@dataclass(frozen=True)
class GpuOutOfMemory:
    """A GPU out-of-memory error, as its message and the framework describe it (MB; None: not said).

    Attributes:
        message: the error's first line, ``"OutOfMemoryError: CUDA out of memory. ..."``.
        requested_mb: the allocation that failed ("Tried to allocate 2.00 GiB").
        in_use_mb: what the process held then (PyTorch: "this process has ... in use", else
            what its allocator had allocated).
        capacity_mb: the device's total memory (from the message, else from PyTorch).
    """

    message: str
    requested_mb: float | None = None
    in_use_mb: float | None = None
    capacity_mb: float | None = None

    @property
    def reached_mb(self) -> float | None:
        """What the trial held plus what it asked for when it failed, as far as the message says."""
        known = [v for v in (self.in_use_mb, self.requested_mb) if v is not None]
        return sum(known) if known else None


def _is_gpu_oom(error: BaseException) -> bool:
    for cls in type(error).__mro__:
        package = cls.__module__.partition(".")[0]
        if cls.__name__ == "OutOfMemoryError" and package == "torch":
            return True
        if cls.__name__ == "ResourceExhaustedError" and package == "tensorflow":
            return True
    if not isinstance(error, RuntimeError):  # jaxlib's XlaRuntimeError is one
        return False
    text = str(error)
    return any(marker in text for marker in _CUDA_MESSAGES) or (
        "RESOURCE_EXHAUSTED" in text and "memory" in text.lower())


def _first(patterns: Iterable[re.Pattern[str]], text: str) -> float | None:
    for pattern in patterns:
        if (match := pattern.search(text)) is not None:
            return float(match.group(1)) * _TO_MB[match.group(2)]
    return None


def _torch_capacity_mb() -> float | None:
    """The current CUDA device's total memory, if this process already uses CUDA through PyTorch."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            return to_mb(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
    except Exception:  # noqa: BLE001 - a failing CUDA runtime only means the capacity is unknown
        pass
    return None


def gpu_out_of_memory(error: BaseException) -> GpuOutOfMemory | None:
    """``error`` (or the error it was raised from or while handling) as a GPU out-of-memory
    error, or None when it is not one. Imports no framework."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_gpu_oom(current):
            text = str(current)
            return GpuOutOfMemory(
                message=one_line(current, typed=True),
                requested_mb=_first(_REQUESTED, text), in_use_mb=_first(_IN_USE, text),
                capacity_mb=_first(_CAPACITY, text) or _torch_capacity_mb(),
            )
        current = current.__cause__ or current.__context__
    return None


def gpu_memory_limit(rules: Iterable[StoppingRule]) -> float | None:
    """The study's ``max_gpu_memory_mb`` among ``rules`` (the lowest, if several), or None."""
    limits = [rule.limit for rule in rules if isinstance(rule, ResourceBudget) and rule.budget.key == RULE]
    return min(limits) if limits else None


def gpu_oom_stop(oom: GpuOutOfMemory, *, step: int, peak_mb: float | None, limit_mb: float | None) -> StopInfo:
    """The system stop of a trial that ran out of GPU memory after ``step`` steps.

    ``value`` is the GPU memory the trial reached: the larger of the watchdog's peak
    (``peak_mb``, per-process NVML memory) and what the error says it held plus asked
    for, NaN when neither is known. ``threshold`` is the limit it hit: the study's budget
    ``limit_mb``, or the device's capacity where that is smaller or no budget is set,
    NaN when neither is known. On a shared device the value can be below the threshold;
    readers take the stop itself as the violation (:attr:`StopInfo.violation` > 0).
    """
    reached = [v for v in (peak_mb, oom.reached_mb) if v is not None and math.isfinite(v)]
    value = max(reached) if reached else math.nan
    capacity = oom.capacity_mb
    if limit_mb is not None and (capacity is None or limit_mb <= capacity):
        threshold, against = limit_mb, f"budget {limit_mb:g} MB"
    elif capacity is not None:
        threshold = capacity
        against = f"device capacity {capacity:.0f} MB" + ("" if limit_mb is None else f" (< budget {limit_mb:g} MB)")
    else:
        threshold, against = math.nan, f"device capacity unknown; set [budget] {RULE} to compare trials against it"
    at = f"{value:.0f} MB" if math.isfinite(value) else "an unknown amount of memory"
    return StopInfo(rule=RULE, kind=SYSTEM, step=step, value=value, threshold=threshold,
                    message=f"{budget(RULE).what} ran out at {at} ({against}): {oom.message}")


def peak_gpu_memory_mb(samples: Iterable[Any]) -> float | None:
    """The largest ``gpu_memory_mb`` of some windows' values or samples (mappings), None if none has it."""
    values = [s[GPU_MEMORY_MB] for s in samples if GPU_MEMORY_MB in s]
    return max(values) if values else None


def why_no_gpu_here() -> str | None:
    """Why this machine's GPU memory cannot be measured, or None when it can."""
    monitor = GpuMonitor(os.getpid())
    try:
        if not monitor.available:
            return "NVML finds no NVIDIA GPU here (or the 'gpu' extra is missing: pip install 'frugalml[gpu]')"
    finally:
        monitor.close()
    return None if visible_gpus() else "CUDA_VISIBLE_DEVICES hides every GPU here"


def warn_if_gpu_budget_unmeasurable(rules: Iterable[StoppingRule], why_not: Callable[[], str | None]) -> None:
    """Warn when ``max_gpu_memory_mb`` is among ``rules`` but no GPU can be measured
    (``why_not()`` says why, or returns None when one can; asked only with such a budget).

    A warning, not an error: the same study file still runs on a laptop or a CPU node,
    where a CPU-only model never uses a GPU (its trials are simply not held to a budget
    nothing measures), and the warning says why no trial stopped on it.
    """
    limit = gpu_memory_limit(rules)
    reason = None if limit is None else why_not()
    if reason is not None:
        warnings.warn(f"[budget] {RULE} = {limit:g} but {reason}: GPU memory cannot be measured, so no trial "
                      "is held to that budget.", stacklevel=3)
