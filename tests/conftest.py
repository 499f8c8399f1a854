"""Shared test set-up: real data from ../shared/data, a private cache, no network."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from helpers import FakeNvml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DURATIONS = Path(__file__).with_name("durations.json")  # seconds per test file: `pytest --store-file-durations`


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--store-file-durations", action="store_true",
                     help=f"write each test file's seconds (setup, call, teardown) to {DURATIONS.name}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest files first. `make test`'s workers take a file at a time (`--dist loadfile
    --no-loadscope-reorder`); in collection order, with two workers, one worker's last long files
    kept the other idle for ~55 s at the end. A file missing from the record goes last; a stale record only
    costs balance. The sort is stable: a file's tests keep their order."""
    seconds = _recorded()
    items.sort(key=lambda item: -seconds.get(_file(item.nodeid), 0.0))
    _collected.update(_file(item.nodeid) for item in items)


def _recorded() -> dict[str, float]:
    try:
        return json.loads(DURATIONS.read_text())
    except (OSError, ValueError):  # none yet, or damaged: collection order then
        return {}


def _file(nodeid: str) -> str:
    return nodeid.split("::")[0]


_collected: Counter[str] = Counter()  # tests per file
_reported: Counter[str] = Counter()  # tests per file that ran (each ends with one teardown report)
_file_seconds: Counter[str] = Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _file_seconds[_file(report.nodeid)] += report.duration
    _reported[_file(report.nodeid)] += report.when == "teardown"


def pytest_sessionfinish(session: pytest.Session) -> None:
    if session.config.getoption("store_file_durations") and not hasattr(session.config, "workerinput"):
        # a file all of whose tests ran replaces its record; the others keep theirs (the controller of an
        # xdist run collects nothing itself: there, every file that reported counts)
        whole = {name for name, ran in _reported.items() if not _collected or ran >= _collected[name]}
        merged = {**_recorded(), **{name: round(s, 1) for name, s in _file_seconds.items() if name in whole}}
        kept = {name: s for name, s in sorted(merged.items(), key=lambda kv: -kv[1]) if s >= 1.0}
        DURATIONS.write_text(json.dumps(kept, indent=0) + "\n")


@pytest.fixture(scope="session", autouse=True)
def _environment(tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = tmp_path_factory.mktemp("frugalml-cache")
    # the xdist workers of a run (their base folders share a parent) share the cache's prepared datasets
    # and MLflow's template store: each would otherwise prepare mnist_784 (~3.7 CPU-s) and migrate the
    # template (~2.6 s) itself; frugalml writes both under a temporary name and renames, so racing is
    # safe. The rest (the notes of running servers, found by model name) stays each worker's own.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for part in ("prepared", "mlflow"):
            shared = tmp_path_factory.getbasetemp().parent / "frugalml-shared-cache" / part
            shared.mkdir(parents=True, exist_ok=True)
            (cache / part).symlink_to(shared, target_is_directory=True)
    os.environ["FRUGALML_CACHE_DIR"] = str(cache)
    os.environ["FRUGALML_DATA_DIR"] = str(SHARED_DATA)
    os.environ["FRUGALML_OFFLINE"] = "1"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    return tmp_path / "study"


@pytest.fixture
def module(tmp_path: Path, monkeypatch):
    """Write ``name.py`` with ``text`` in a folder on sys.path; returns the module's name (forgotten
    by ``sys.modules`` after the test)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(name: str, text: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


@pytest.fixture
def fake_nvml(monkeypatch):
    def install(devices: list[dict], init_error: bool = False) -> FakeNvml:
        nvml = FakeNvml(devices, init_error)
        monkeypatch.setitem(sys.modules, "pynvml", nvml)
        return nvml

    return install
