"""The results store while another process or thread creates it, or holds it locked."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from frugalml import ConfigError, ResultStore, StoreError
from frugalml.exceptions import StoreLockedError
from helpers import cli, write_study


def test_a_reader_polling_a_store_being_created_never_takes_it_for_a_damaged_one(tmp_path):
    # `frugalml show`, or a test waiting for trials, may open the file between its creation,
    # the switch to WAL and the tables: that used to fail the reader (a "foreign" store with
    # only some tables) or the creator ("database is locked" from the WAL switch).
    errors = []
    for i in range(150):
        creator, reader = ResultStore(tmp_path / str(i)), ResultStore(tmp_path / str(i))

        def create(store=creator):
            try:
                store.open_study("s", {"name": "s"})
            except Exception as error:  # noqa: BLE001 - collected and asserted below
                errors.append(error)

        thread = threading.Thread(target=create)
        thread.start()
        while thread.is_alive():
            try:
                reader.trial_ids()
            except Exception as error:  # noqa: BLE001
                errors.append(error)
                break
        thread.join()
    assert errors == []


# -- a lock is a lock ---------------------------------------------------------------------

LOCK_STUDY = """
[study]
name = "locked"
workers = 1
directory = "out"

[[workloads]]
train = "trainers:steady"
train_kwargs = {{ steps = 20, step_s = 0.001 }}
eval_every = 10
name = "steady"

[search]
method = "grid"
space = {{ offset = {offsets} }}

[tracking]
mlflow_uri = "none"
"""

HOLD = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")  # the write lock, held until killed
print("held", flush=True)
time.sleep(600)
"""


@contextmanager
def _held(db: Path):
    """Another process inside a write transaction on ``db``, until the block ends."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def _assert_lock_message(text: str) -> None:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("frugalml: error:"), text
    assert "locked by another process" in lines[0] and "Traceback" not in text
    assert "--fresh" not in text and "restore" not in text and "unreadable" not in text  # a lock is no damage


def test_a_store_another_process_holds_is_waited_for_then_reported_as_a_lock(tmp_path):
    store = ResultStore(tmp_path, timeout_s=0.5)
    store.open_study("s", {"name": "s"})
    with _held(store.path) as holder:
        started = time.monotonic()
        with pytest.raises(StoreLockedError) as caught:
            store.set_mlflow_run("t", "run")  # a write
        waited = time.monotonic() - started
        with pytest.raises(StoreLockedError):
            store.check_writable()
        assert store.trial_ids() == set()  # reading goes on: WAL readers do not wait for the writer
    message = str(caught.value)
    assert 0.4 < waited < 10 and "gave up after 0.5 s" in message and "FRUGALML_STORE_TIMEOUT_S" in message
    assert f"pid {holder.pid}" in message  # who holds it, when that is visible
    assert "--fresh" not in message and "restore" not in message
    store.check_writable()  # released: writable again at once
    store.set_mlflow_run("t", "run")


def test_the_wait_for_a_lock_is_a_few_seconds_and_configurable(monkeypatch, tmp_path):
    monkeypatch.delenv("FRUGALML_STORE_TIMEOUT_S", raising=False)
    assert ResultStore(tmp_path).timeout_s == 5.0
    monkeypatch.setenv("FRUGALML_STORE_TIMEOUT_S", "0.25")
    assert ResultStore(tmp_path).timeout_s == 0.25
    assert ResultStore(tmp_path, timeout_s=2).timeout_s == 2.0
    for bad in ("soon", "-1", "nan", "inf"):
        monkeypatch.setenv("FRUGALML_STORE_TIMEOUT_S", bad)
        with pytest.raises(ConfigError, match="FRUGALML_STORE_TIMEOUT_S environment variable must be a number of seconds >= 0"):
            ResultStore(tmp_path)


def test_only_a_damaged_store_mentions_restoring_it(tmp_path):
    store = ResultStore(tmp_path)
    store.path.write_bytes(b"not a database, just text\n" * 100)
    with pytest.raises(StoreError, match="damaged; restore it from a copy") as caught:
        store.trial_ids()
    assert not isinstance(caught.value, StoreLockedError)


def test_tune_on_a_locked_store_is_one_line_within_seconds_and_loses_nothing(tmp_path, monkeypatch):
    study_file = write_study(tmp_path / "s.toml", LOCK_STUDY.format(offsets="[0.0, 0.1]"))
    assert cli("tune", str(study_file), "--no-progress", cwd=tmp_path).returncode == 0
    store = ResultStore(tmp_path / "out")
    before = store.trial_ids()
    write_study(study_file, LOCK_STUDY.format(offsets="[0.0, 0.1, 0.2]"))  # one more trial to write
    monkeypatch.setenv("FRUGALML_STORE_TIMEOUT_S", "1")
    with _held(store.path):
        started = time.monotonic()
        locked = cli("tune", str(study_file), "--resume", "--no-progress", cwd=tmp_path, timeout=120)
        took = time.monotonic() - started
        shown = cli("show", str(tmp_path / "out"), "--format", "json", cwd=tmp_path)  # readers are not blocked
    assert locked.returncode == 2, locked.stdout + locked.stderr
    _assert_lock_message(locked.stderr)
    assert "gave up after 1 s" in locked.stderr
    assert took < 60  # a trial of 20 steps, 1 s of waiting, start-up on a loaded machine; never the old 30 s
    assert shown.returncode == 0 and len(json.loads(shown.stdout)) == len(before) == 2
    assert store.trial_ids() == before  # nothing lost, nothing half-written
    resumed = cli("tune", str(study_file), "--resume", "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert len(store.trial_ids()) == 3
