"""A full disk is one line naming the path and the free space, a non-zero exit, and nothing
half-written: on a small tmpfs filled up (needs root to mount), on ``/dev/full`` and with a
real SQLite "disk is full" (everywhere)."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from frugalml import ResultStore
from frugalml.exceptions import DiskFullError
from frugalml.files import is_disk_full, reporting_disk_full, write_atomic
from frugalml.records import TrialRecord, TrialStatus
from helpers import TESTS, cli, write_study

STUDY = """
[study]
name = "full"
workers = 1
directory = "{directory}"

[[workloads]]
train = "trainers:steady"
train_kwargs = {{ steps = 3000, step_s = 0.0 }}  # ~100 KB of steps per trial in the store
eval_every = 500
name = "steady"

[search]
method = "grid"
space = {{ offset = [0.0, 0.1, 0.2, 0.3] }}

[tracking]
mlflow_uri = "none"
"""


def _assert_one_line_disk_full(result: subprocess.CompletedProcess, path: Path | str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("frugalml: error:"), result.stderr
    assert "Traceback" not in result.stderr
    assert "no space left" in lines[0] and str(path) in lines[0] and " free on " in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2 MB tmpfs at ``tmp_path/disk``, unmounted afterwards; skipped where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command: the tmpfs-full run needs one (the /dev/full tests run instead)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root, or CAP_SYS_ADMIN, is needed): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path, leave_bytes: int) -> Path:
    """Fill ``disk`` until a write fails, then free ``leave_bytes`` again."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as stream:  # unbuffered: nothing left to fail again at close
        try:
            while stream.write(b"\0" * 4096):
                pass
        except OSError as error:
            assert error.errno == errno.ENOSPC
    os.truncate(filler, max(0, filler.stat().st_size - leave_bytes))
    return filler


@pytest.mark.parametrize("leave_kb", [0, 48, 400])  # before the store, in its creation, at a later trial
def test_a_study_on_a_full_disk_is_one_line_and_resumes_once_there_is_room(small_disk, tmp_path, leave_kb):
    filler = _fill(small_disk, leave_kb * 1024)
    directory = small_disk / "out"
    study_file = write_study(tmp_path / "s.toml", STUDY.format(directory=directory))
    full = cli("tune", str(study_file), "--no-progress", cwd=tmp_path, timeout=120)
    line = _assert_one_line_disk_full(full, directory)
    assert "--resume" in line  # tune says how to go on
    assert not list(small_disk.rglob("*.tmp"))  # no temporary file left behind
    filler.unlink()  # room again: the trials stored are whole, and the command it named goes on
    store = ResultStore(directory)
    stored = store.trial_ids()
    assert len(stored) < 4
    again = cli("tune", str(study_file), "--no-progress", *(["--resume"] if stored else []), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    trials = store.trials()
    assert len(trials) == 4 and {t.trial_id for t in trials} >= stored
    assert all(t.steps_done == 3000 and len(t.train_loss) == 3000 for t in trials)


def test_write_atomic_on_a_full_disk_keeps_the_old_file_and_no_temporary(small_disk):
    target = small_disk / "lineage.json"
    target.write_text("old")
    _fill(small_disk, 0)
    with pytest.raises(DiskFullError, match=f"no space left on the device writing {target} \\(0 KB free on "):
        write_atomic(target, "x" * 2**20)
    assert target.read_text() == "old" and sorted(p.name for p in small_disk.iterdir()) == ["filler", "lineage.json"]


# -- everywhere: /dev/full and SQLite's own "disk is full" -------------------------------------

needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")


@needs_dev_full
def test_output_redirected_to_a_full_device_is_one_line(tmp_path):
    study_file = write_study(tmp_path / "s.toml", STUDY.format(directory=tmp_path / "out"))
    assert cli("tune", str(study_file), "--no-progress").returncode == 0
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    for fmt in ("csv", "table"):
        with open("/dev/full", "w") as full:
            result = subprocess.run([sys.executable, "-m", "frugalml.cli", "show", str(tmp_path / "out"),
                                     "--format", fmt], stdout=full, stderr=subprocess.PIPE, text=True, env=env,
                                    timeout=120)
        result.stdout = ""
        _assert_one_line_disk_full(result, "/dev/full")


@needs_dev_full
def test_a_write_that_fails_only_when_flushed_is_named_by_its_path(tmp_path):
    target = tmp_path / "report.html"
    with pytest.raises(DiskFullError, match=f"writing {target} "):
        with reporting_disk_full(target), open("/dev/full", "w") as stream:
            stream.write("x")  # the kernel's ENOSPC comes at the flush, with no file name
    assert not target.exists()


def test_write_atomic_removes_its_temporary_file_when_the_disk_fills(monkeypatch, tmp_path):
    target = tmp_path / "lineage.json"
    target.write_text("old")

    def no_space(fd: int) -> None:  # what NFS or a quota reports only at fsync
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(DiskFullError, match=f"disk quota exceeded writing {target} "):
        write_atomic(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["lineage.json"]


def test_sqlite_disk_full_is_recognised_through_wrapping_errors(tmp_path):
    with closing(sqlite3.connect(tmp_path / "small.db")) as db:
        db.execute("CREATE TABLE t (x BLOB)")
        db.execute("PRAGMA max_page_count = 3")  # a real SQLITE_FULL without filling a disk
        with pytest.raises(sqlite3.OperationalError) as caught:
            db.execute("INSERT INTO t VALUES (?)", (os.urandom(2**16),))
    assert is_disk_full(caught.value)
    try:  # as MLflow's SQLAlchemy raises it: another error, from the sqlite3 one
        raise RuntimeError("(sqlite3.OperationalError) database or disk is full") from caught.value
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)
    assert not is_disk_full(sqlite3.OperationalError("database is locked"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))


def test_the_cli_names_a_full_disk_from_any_command_in_one_line(tmp_path):
    # a disk-full OSError raised deep in a command, without a file name: the frame that wrote knows the path
    script = f"""
import errno, pathlib, sys, types
import frugalml.cli as cli

def explode(args):
    target = pathlib.Path({str(tmp_path / 'figure.png')!r})
    raise OSError(errno.ENOSPC, "No space left on device")

command = types.ModuleType("explode_command")  # a subcommand module, as the CLI loads its own
command.add_parser = lambda subparsers: subparsers.add_parser("explode").set_defaults(func=explode)
sys.modules["explode_command"] = command
cli.COMMAND_MODULES.append("explode_command")
sys.exit(cli.main(["explode"]))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(TESTS)}, cwd=tmp_path)
    _assert_one_line_disk_full(result, tmp_path / "figure.png")
    assert "--resume" not in result.stderr  # only tune has a study to continue


def test_a_trial_written_on_a_full_disk_is_rolled_back_whole(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    store.open_study("s", {"name": "s"})
    store.save_trial(_record("small", steps=3))
    before = _rows(store.path)
    real_connect = sqlite3.connect

    def full_after_one_page(*args, **kwargs):  # a real SQLITE_FULL: the file may grow by one page
        connection = real_connect(*args, **kwargs)
        connection.execute(f"PRAGMA max_page_count = {connection.execute('PRAGMA page_count').fetchone()[0] + 1}")
        return connection

    monkeypatch.setattr(sqlite3, "connect", full_after_one_page)
    with pytest.raises(DiskFullError, match=f"writing {store.path} "):
        store.save_trial(_record("large", steps=20000))
    monkeypatch.undo()
    assert _rows(store.path) == before and {t.trial_id for t in store.trials()} == {"w/small/r0"}


def _record(config_id: str, steps: int) -> TrialRecord:
    return TrialRecord(trial_id=f"w/{config_id}/r0", number=0, workload="w", config_id=config_id, repeat=0,
                       params={"x": 1}, status=TrialStatus.COMPLETED, steps_done=steps,
                       train_loss=tuple(1.0 / (i + 1) for i in range(steps)))


def _rows(path: Path) -> dict[str, list[tuple]]:
    with closing(sqlite3.connect(path)) as db:
        return {table: sorted(db.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
                for table in ("trials", "steps", "windows")}
