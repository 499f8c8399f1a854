"""Gate fixtures: small studies of a user's own loop whose step time is set by a parameter."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session", autouse=True)
def _trainers_importable() -> None:
    """Trial workers and CLI subprocesses import ``gate_trainers`` from here."""
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])


def timed_study(name: str, step_s: float, directory: Path) -> Path:
    """Two epochs of ``timed_sgd`` (48 steps) in windows of 4 steps: 12 windows a trial, 11 steady,
    and ``frugalml check`` re-measures (its default 5 rounds a side, interleaved) little busy work."""
    from frugalml import Search, Study, Workload, tune

    workload = Workload(train="gate_trainers:timed_sgd", train_kwargs={"epochs": 2}, eval_every=4, name="w")
    spec = Study(name=name, workloads=[workload], search=Search(objectives=["accuracy"],
                 space={"alpha": [1e-4], "step_s": [step_s]}), repeats=2, workers=1, directory=str(directory / name))
    tune(spec)
    return Path(spec.directory)


@pytest.fixture(scope="session")
def gate_studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``base``, and ``slow`` whose steps take over 2x as long.

    One worker: two trials sharing the 2 cores with other work would make the stored
    repeats, which the bootstrap resamples, too unequal to tell the studies apart.
    ``base`` adds 2 ms of CPU a step, ``slow`` 12: ~3.7x the work a step, because the
    stored-trials comparison times each study when it was tuned, and a 2-core machine loaded
    by other work for one tune and not the other (~2x) read a 2.4x candidate (4 ms against
    12) as only 1.25x slower, a pass; the re-measured comparison is interleaved.
    """
    folder = tmp_path_factory.mktemp("gate")
    return {"base": timed_study("base", 0.002, folder), "slow": timed_study("slow", 0.012, folder)}
