"""What a running trial tells its executor: the worker protocol, one frozen class per message.

A trial's :class:`~frugalml.trial.Trial` and, in a worker process, the worker itself send
these; each executor feeds them to one :class:`~frugalml.executors` lifecycle that turns
them into the trial's windows and record. They cross a ``multiprocessing`` pipe as
pickles, so they hold plain values only::

    Message
    ├── Plan          trial.plan(total_steps): the steps a full run takes
    ├── Info          trial.set_info / log_model / log_reference: facts about the trial
    ├── FirstStep     the first step ended: the trial's set-up is over
    ├── WindowEnd     an evaluation window ended (its steps, losses and reported metrics)
    ├── Metrics       metrics reported outside a window (before any step, or a second report)
    └── the last message of a trial
        ├── Done      the training function returned
        └── Failed    it raised (a GPU out-of-memory error among them)

Example:
    >>> import pickle
    >>> pickle.loads(pickle.dumps(Plan(steps=500))) == Plan(steps=500)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, Union


class _Message:
    """Pickled as its class and field values: half the time of a slotted dataclass's default
    pickling (a window's message crosses the pipe in ~10 µs)."""

    __slots__ = ()

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return type(self), tuple([getattr(self, name) for name in self.__slots__])


@dataclass(frozen=True, slots=True)
class Plan(_Message):
    """The steps a full run takes (``trial.plan``)."""

    steps: int


@dataclass(frozen=True, slots=True)
class Info(_Message):
    """Facts about the trial, merged into its record's ``info``."""

    info: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class FirstStep(_Message):
    """The first step ended. ``cpu_s``: the CPU-seconds used so far, stamped by the sender's
    executor (the worker, or the in-process executor); None from a bare :class:`Trial`."""

    cpu_s: float | None = None


@dataclass(frozen=True, slots=True)
class WindowEnd(_Message):
    """An evaluation window ended after ``step`` steps.

    Attributes:
        step: the steps done at the window's end.
        n_steps: the window's steps.
        train_s: their summed step time.
        samples: the training samples they saw.
        losses: each step's loss (NaN where none was given).
        train_loss: the mean of the finite ``losses`` (NaN if none).
        metrics: what ``trial.report`` attached (empty when the window ended without a report).
        wall_s: seconds since the trial started.
        after_loop: flushed once training returned, so not a step boundary.
        own_memory_mb: the worker process's own memory, stamped by the worker.
        cpu_s: CPU-seconds used so far, stamped by the executor at the step boundary.
        ended_at: ``time.monotonic()`` in the trial when the window ended. One clock per machine,
            so the watching parent leaves its samples taken later (the parent reads messages
            late on a busy machine) to the next window.
    """

    step: int
    n_steps: int
    train_s: float
    samples: int
    losses: Sequence[float]
    train_loss: float = math.nan
    metrics: Mapping[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    after_loop: bool = False
    own_memory_mb: float | None = None
    cpu_s: float | None = None
    ended_at: float | None = None


@dataclass(frozen=True, slots=True)
class Metrics(_Message):
    """Metrics reported outside a window: they join the latest window, or the next one."""

    step: int
    metrics: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Done(_Message):
    """The training function returned after ``steps`` steps, having used ``cpu_s``."""

    steps: int
    cpu_s: float


@dataclass(frozen=True, slots=True)
class Failed(_Message):
    """The training function raised.

    Attributes:
        error: the error's first line, ``"ValueError: ..."``.
        traceback: the formatted traceback.
        user_error: a :class:`~frugalml.exceptions.FrugalError` (a misuse, not a crash).
        cpu_s: CPU-seconds used until then.
        oom: a ``frugalml.executors`` ``GpuOutOfMemory`` when the error was the GPU running
            out of memory (a budget stop, not a crash), else None.
    """

    error: str
    traceback: str
    user_error: bool
    cpu_s: float
    oom: Any = None


Message = Union[Plan, Info, FirstStep, WindowEnd, Metrics, Done, Failed]
Outcome = Union[Done, Failed]
