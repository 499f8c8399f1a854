"""The :class:`Trial` handle that training code calls once per step.

The per-step path is the hottest code in frugalml: :meth:`Trial.step` is two clock
reads, two list appends and three writes into shared memory (and, once, a message at
the end of the first step: where the trial's set-up ends for :mod:`frugalml.accounting`). The operating system
is sampled from the parent process on a cadence (see ``frugalml.monitors``), so the
trial's own process never pays for it.

Step time is the time from the end of the previous trial call (``step`` or
``report``) to this ``step`` call, so evaluation done between ``step`` returning
True and ``report`` is excluded.

Example::

    def train(trial: frugalml.Trial) -> None:
        model = SGDClassifier(eta0=trial.params["learning_rate"], learning_rate="constant")
        for X, y in batches(trial.params["batch_size"]):
            model.partial_fit(X, y, classes=classes)
            if trial.step(loss=batch_loss(model, X, y), n_samples=len(X)):
                trial.report(val_loss=val_loss(model), accuracy=model.score(X_val, y_val))
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable, Iterator, Mapping

from frugalml.exceptions import TrialUsageError
from frugalml.messages import FirstStep, Info, Message, Metrics, Plan, WindowEnd

# Slots of the shared progress array the parent's watchdog reads without a message.
PROGRESS_STEPS = 0  # steps done
PROGRESS_MARK = 1  # time.monotonic() at the end of the latest trial call
PROGRESS_WINDOW_S = 2  # training seconds in the current window so far
PROGRESS_EVALUATING = 3  # 1.0 between a window's last step and its report (evaluation time)
PROGRESS_PHASE = 4  # PHASE_TRAIN, PHASE_EVALUATE (the training function returned), PHASE_LOG
PROGRESS_SIZE = 5

PHASE_TRAIN, PHASE_EVALUATE, PHASE_LOG = 0.0, 1.0, 2.0
PHASES = {PHASE_TRAIN: "train", PHASE_EVALUATE: "evaluate", PHASE_LOG: "log"}


def phase_name(phase: float, steps: int, steps_planned: int | None) -> str:
    """Where a trial is, from its progress slot: ``train``, ``evaluate`` (its last planned step
    is done, or its training function returned) or ``log`` (saving a model or reference data)."""
    if phase == PHASE_TRAIN and steps_planned and steps >= steps_planned:
        phase = PHASE_EVALUATE
    return PHASES.get(phase, "train")


class TrialStopped(BaseException):
    """Raised inside ``trial.step``/``trial.report`` when a rule stops the trial in this
    process (the in-process executor; the process executors kill the worker instead).

    A BaseException, so that a training loop's ``except Exception`` cannot swallow it;
    framework adapters catch it to end training the framework's own way.
    """


class Trial:
    """What a training function sees: its parameters and the step/report calls.

    Args:
        params: the configuration under test (e.g. ``batch_size``, ``learning_rate``).
        eval_every: steps per evaluation window.
        send: callable taking one :mod:`frugalml.messages` message (a pipe to the parent in a worker).
        progress: a writable sequence of ``PROGRESS_SIZE`` floats shared with the parent,
            or None for a private one.
        steps_planned: the steps a full run takes, when known (see :meth:`plan`).
        artifact_dir: where :meth:`log_model` and :meth:`log_reference` write (the
            executor gives each trial its own folder in the study directory).
    """

    def __init__(
        self,
        params: Mapping[str, Any],
        *,
        eval_every: int = 100,
        send: Callable[[Message], None] | None = None,
        progress: Any = None,
        steps_planned: int | None = None,
        artifact_dir: str | None = None,
    ) -> None:
        self.params = dict(params)
        self.artifact_dir = artifact_dir
        self.eval_every = int(eval_every)
        self.steps_planned = steps_planned
        self._send = send or (lambda message: None)
        self._progress = progress if progress is not None else [0.0] * PROGRESS_SIZE
        self._steps = 0
        self._samples = 0
        self._durations: list[float] = []
        self._losses: list[float] = []
        self._window_due = False
        self._started = time.monotonic()
        self._mark = time.perf_counter()
        self._progress[PROGRESS_MARK] = self._started

    @property
    def steps(self) -> int:
        """Steps done so far."""
        return self._steps

    def plan(self, total_steps: int) -> None:
        """Say how many steps a full run takes (epochs x batches, boosting rounds, ...).

        With a planned length the study counts the compute a stop saved, predicted
        stops extrapolate to the end, and progress shows how far a trial got.
        Framework adapters call it for you.
        """
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise TrialUsageError(f"trial.plan(total_steps) needs an int >= 1, such as epochs * batches per epoch. "
                              f"Got {total_steps!r} instead.")
        self.steps_planned = total_steps
        self._send(Plan(total_steps))

    def log_model(self, model: Any, *, input_example: Any = None) -> str:
        """Keep ``model`` with this trial: its MLflow run's ``model``, and ``frugalml register``'s.

        The flavour follows the model's type (scikit-learn, PyTorch, Keras, XGBoost,
        LightGBM, Transformers; anything with ``predict`` as a pyfunc). Pass an
        ``input_example`` (a few input rows) so the model gets a signature. Returns
        the model's directory. Call it once, after training.

        The trial only pickles it; the driver exports it as an MLflow model once the
        trial ended, so MLflow's import is not charged to the trial's budgets.
        """
        directory = self._artifacts("model")
        with self._phase(PHASE_LOG):
            from frugalml.flavors import save_model  # lazy: cloudpickle, only for a trial that keeps a model

            path = save_model(model, directory, input_example=input_example)
        self._send(Info({"model": {"path": str(path[0]), "flavor": path[1]}}))
        return str(path[0])

    def log_reference(self, X: Any, y: Any = None, *, task: str | None = None) -> str:
        """Save the data the model should be checked against when served (drift, quality).

        ``X``: the model's inputs (a DataFrame, or an array: columns ``x0``, ``x1``, ...);
        ``y``: their labels or targets; ``task``: ``"classification"`` or
        ``"regression"`` (default: from ``y``: floats are a regression target).
        """
        directory = self._artifacts("reference")
        with self._phase(PHASE_LOG):
            from frugalml.flavors import save_reference

            path = save_reference(directory, X, y, task=task)
        self._send(Info({"reference": str(path)}))
        return str(path)

    @contextlib.contextmanager
    def _phase(self, phase: float) -> Iterator[None]:
        """The watchdog reads the phase, so a stop records where the trial was (``stop_phase``)."""
        previous = self._progress[PROGRESS_PHASE]
        self._progress[PROGRESS_PHASE] = phase
        yield  # no finally: a failure inside stays marked with the phase it failed in
        self._progress[PROGRESS_PHASE] = previous

    @property
    def phase(self) -> str:
        """``train``, ``evaluate`` (after the last planned step, or once training returned) or ``log``."""
        return phase_name(self._progress[PROGRESS_PHASE], self._steps, self.steps_planned)

    def _artifacts(self, what: str) -> str:
        if self.artifact_dir is None:
            raise TrialUsageError(f"trial.log_{what} needs a trial run by frugalml.tune (it saves with the study); "
                                  "outside a study, save with mlflow directly.")
        return self.artifact_dir

    def reset_clock(self) -> None:
        """Start timing the next step now: call it after set-up (loading data, building
        the model) so that set-up is not counted as the first step's time."""
        self._reset_mark()

    def step(self, loss: float = math.nan, n_samples: int = 1) -> bool:
        """Record one training step; returns True when an evaluation window ends.

        Call :meth:`report` with validation metrics when it returns True; if you do
        not, the window is recorded without them at the next step.
        """
        now = time.perf_counter()
        if self._window_due:
            self._flush({})
            now = time.perf_counter()
        duration = now - self._mark
        self._durations.append(duration)
        self._losses.append(loss)
        self._samples += n_samples
        self._steps += 1
        progress = self._progress
        progress[PROGRESS_STEPS] = self._steps
        progress[PROGRESS_WINDOW_S] += duration
        progress[PROGRESS_MARK] = time.monotonic()
        if self._steps == 1:  # set-up ends here; sent before the mark, so no step pays for it
            self._send(FirstStep())
        self._mark = time.perf_counter()
        if self._steps % self.eval_every == 0:
            self._window_due = True
            progress[PROGRESS_EVALUATING] = 1.0
            return True
        return False

    def report(self, **metrics: float) -> None:
        """Attach evaluation metrics (``val_loss``, ``accuracy``, ``rmse``, custom) to the
        window that just ended, or to a partial window at the end of training."""
        self._flush({name: float(value) for name, value in metrics.items()})

    def set_info(self, **info: Any) -> None:
        """Record facts about this trial (e.g. ``batch_size_clamped=True``)."""
        self._send(Info(info))

    def _flush(self, metrics: dict[str, float], after_loop: bool = False) -> None:
        if not self._durations:
            if metrics:  # an evaluation before any step, or a repeated report
                self._send(Metrics(self._steps, metrics))
            self._reset_mark()
            return
        train_s = sum(self._durations)
        finite = [x for x in self._losses if x == x]
        ended_at = time.monotonic()
        self._progress[PROGRESS_WINDOW_S] = 0.0  # before the window is sent: its reader must not see its time again
        self._send(
            WindowEnd(
                step=self._steps,
                n_steps=len(self._durations),
                train_s=train_s,
                samples=self._samples,
                losses=self._losses,
                train_loss=sum(finite) / len(finite) if finite else math.nan,
                metrics=metrics,
                wall_s=ended_at - self._started,
                after_loop=after_loop,  # flushed once training returned: not a step boundary
                ended_at=ended_at,
            )
        )
        self._durations = []
        self._losses = []
        self._samples = 0
        self._window_due = False
        self._reset_mark()

    def _end_training(self) -> None:
        """Time after the last step is evaluation and shutdown, not a step."""
        self._progress[PROGRESS_EVALUATING] = 1.0
        self._progress[PROGRESS_PHASE] = PHASE_EVALUATE

    def _reset_mark(self) -> None:
        self._progress[PROGRESS_EVALUATING] = 0.0
        self._progress[PROGRESS_MARK] = time.monotonic()
        self._mark = time.perf_counter()

    def _finish(self) -> None:
        """Flush a partial window; called by the executor after the function returns."""
        if self._durations:
            self._flush({}, after_loop=True)
        self._end_training()
