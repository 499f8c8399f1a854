"""Fixtures of the framework integration tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """This process's own torch work (exporting each trial's model to MLflow, register's latency
    probe, expected predictions) on one thread, as in the workers (the trainers call
    ``torch.set_num_threads(1)``): with two, OpenMP's second thread spins on a busy 2-core
    machine, ~6x the CPU-s for the same predictions."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
