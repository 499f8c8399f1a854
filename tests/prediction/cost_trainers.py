"""Training functions for the prediction tests (module-level, so workers can import them)."""

from __future__ import annotations

import time

import numpy as np


def leak(trial, steps: int = 400, mb_per_step: float = 0.5, step_s: float = 0.005) -> None:
    """Keeps ``mb_per_step`` MB of every step: memory rises steadily, as with a history leak."""
    held = []
    for _ in range(steps):
        held.append(np.ones(int(mb_per_step * 2**20) // 8))  # np.ones touches every page
        time.sleep(step_s)
        if trial.step(loss=1.0, n_samples=1):
            trial.report(val_loss=1.0)


def hold(trial, megabytes: int = 10, steps: int = 30) -> None:
    """Holds ``params['megabytes']`` MB for the whole run: memory = base + megabytes."""
    held = np.ones(int(trial.params.get("megabytes", megabytes)) * 2**20 // 8)
    for _ in range(steps):
        time.sleep(0.002)
        if trial.step(loss=float(held[0]), n_samples=1):
            trial.report(val_loss=1.0 / (1 + trial.params.get("megabytes", megabytes)))


def sized(trial, steps: int = 30, step_s: float = 0.004) -> None:
    """Holds batch_size / 128 MB (256 MB at 32768) for the run; val_loss is lowest at a
    learning rate of 0.01 and falls with the batch size, so the search is drawn to large batches."""
    import math

    batch_size, learning_rate = trial.params["batch_size"], trial.params["learning_rate"]
    held = np.ones(int(batch_size) * 2**13 // 8)
    for step in range(1, steps + 1):
        time.sleep(step_s)
        if trial.step(loss=float(held[0]) / step, n_samples=int(batch_size)):
            trial.report(val_loss=0.1 * (math.log10(learning_rate) + 2) ** 2 + 1 / math.log10(batch_size + 1))
