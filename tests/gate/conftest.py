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


def timed_study(name: str, step_s: float, directory: Path, **params):
    from frugalml import Search, Study, Workload, tune

    space = {"alpha": [1e-4], "step_s": [step_s], **{k: [v] for k, v in params.items()}}
    spec = Study(name=name, workloads=[Workload(train="gate_trainers:timed_sgd", eval_every=8, name="w")],
                 search=Search(objectives=["accuracy"], space=space), repeats=2, workers=1,
                 directory=str(directory / name))
    tune(spec)
    return Path(spec.directory)


@pytest.fixture(scope="session")
def gate_studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``base``, and ``slow`` whose steps take ~2x as long (its CPU work per step raised to match).
    One worker: two trials sharing the 2 cores with other work would make the stored
    repeats, which the bootstrap resamples, too unequal to tell the studies apart."""
    folder = tmp_path_factory.mktemp("gate")
    return {"base": timed_study("base", 0.004, folder), "slow": timed_study("slow", 0.012, folder)}
