"""The embedded results store: one SQLite file in the study's directory.

Tables: ``study`` (name and spec), ``trials`` (one row per trial, JSON for nested
fields), ``steps`` (training loss per step) and ``windows`` (one row per window
and metric, long format). A trial is written in one transaction when it ends, so
an interrupted study never holds half a trial; running trials are not stored and
are re-run on resume.

Another process holding the store (another ``frugalml tune`` writing it, or any program
inside a write transaction) is waited for, ``FRUGALML_STORE_TIMEOUT_S`` seconds (default
5), then reported as a lock: a :class:`~frugalml.exceptions.StoreLockedError`, never as
damage. A full disk is a :class:`~frugalml.exceptions.DiskFullError`; the transaction
that hit it is rolled back, so the store keeps every trial written before.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from contextlib import closing, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Iterator

from frugalml.exceptions import ConfigError, DiskFullError, StoreError, StoreLockedError
from frugalml.files import free_space, reporting_disk_full, sqlite_primary_code
from frugalml.ownership import make_owned_dir
from frugalml.records import StopInfo, TrialRecord, TrialStatus, Window

STORE_FILE = "frugalml.db"
RUN_LOCK_FILE = ".frugalml-run.lock"  # flocked by the process running the study
TIMEOUT_ENV = "FRUGALML_STORE_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 5.0  # a trial's write takes milliseconds: longer than this is another process's lock

_TABLES = frozenset({"study", "trials", "steps", "windows"})
_SCHEMA = """
CREATE TABLE IF NOT EXISTS study (name TEXT PRIMARY KEY, spec TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    trial_id TEXT PRIMARY KEY, number INTEGER, workload TEXT, config_id TEXT, repeat INTEGER,
    params TEXT, status TEXT, steps_done INTEGER, steps_planned INTEGER, wall_s REAL, cpu_s REAL,
    steps_saved INTEGER, cpu_s_saved REAL, stop TEXT, error TEXT, info TEXT, mlflow_run_id TEXT,
    finished REAL
);
CREATE TABLE IF NOT EXISTS steps (trial_id TEXT, step INTEGER, train_loss REAL);
CREATE TABLE IF NOT EXISTS windows (trial_id TEXT, step INTEGER, name TEXT, value REAL);
CREATE INDEX IF NOT EXISTS steps_trial ON steps (trial_id);
CREATE INDEX IF NOT EXISTS windows_trial ON windows (trial_id);
"""


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__}")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, sort_keys=True)


def _nan_to_none(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def store_timeout_s() -> float:
    """How long a store held by another process is waited for: ``$FRUGALML_STORE_TIMEOUT_S``, else 5 s."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        return _check_timeout(float(raw), f"The {TIMEOUT_ENV} environment variable")
    except ValueError:
        raise ConfigError(f"The {TIMEOUT_ENV} environment variable must be a number of seconds >= 0. "
                          f"Got {raw!r} instead.") from None


def _check_timeout(timeout_s: float, what: str) -> float:
    if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s >= 0):
        raise ConfigError(f"{what} must be a number of seconds >= 0. Got {timeout_s!r} instead.")
    return float(timeout_s)


def _open_by(path: Path, limit: int = 3, within_s: float = 1.0) -> list[str]:
    """Other processes that have the store (or its WAL/journal) open: ``["pid 42 python3"]``.
    Best effort, for the message only: processes of other users are not visible."""
    import psutil

    names = {str(path.resolve()) + suffix for suffix in ("", "-wal", "-shm", "-journal")}
    found: list[str] = []
    deadline = time.monotonic() + within_s
    for process in psutil.process_iter(["name"]):
        if process.pid == os.getpid() or len(found) >= limit or time.monotonic() > deadline:
            continue
        try:
            if any(f.path in names for f in process.open_files()):
                found.append(f"pid {process.pid} {process.info['name']}")
        except (psutil.Error, OSError):
            continue
    return found


def _set_wal(connection: sqlite3.Connection, timeout_s: float) -> None:
    """Switch to WAL; SQLite answers "locked" at once, without waiting, while a reader
    (``frugalml show``, a test polling a new study) is inside the file, so wait here."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class ResultStore:
    """Reads and writes one study's results in ``<directory>/frugalml.db``.

    Example:
        >>> store = ResultStore("studies/demo")          # doctest: +SKIP
        >>> [t.status for t in store.trials()]           # doctest: +SKIP
    """

    def __init__(self, directory: str | Path, *, timeout_s: float | None = None) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STORE_FILE
        # how long another process's lock is waited for before a StoreLockedError
        self.timeout_s = store_timeout_s() if timeout_s is None else _check_timeout(timeout_s, "timeout_s")

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def _connect(self, *, create: bool = False) -> sqlite3.Connection:
        if not create and not self.path.exists():
            raise StoreError(f"No results store at {self.path}; run `frugalml tune` first or check the path.")
        if self.directory.exists() and not self.directory.is_dir():
            raise StoreError(f"{self.directory} is a file; a study needs a folder there. Choose another directory.")
        make_owned_dir(self.directory)  # marked: the only kind of folder --fresh deletes whole
        existed = self.path.exists()
        connection = sqlite3.connect(self.path, timeout=self.timeout_s)  # SQLite's busy timeout
        try:
            if create:  # persistent in the file, so readers leave it alone
                _set_wal(connection, self.timeout_s)
            if existed:
                tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                foreign = sorted(t for t in tables - _TABLES if not t.startswith("sqlite_"))
                if foreign:
                    raise StoreError(
                        f"{self.path} is not a readable frugalml results store (it holds other tables: "
                        f"{', '.join(foreign)}); another program's database is there: choose another directory."
                    )
                # only some of ours, or none: a store another process is creating right now
        except BaseException:
            connection.close()
            raise
        return connection

    @contextmanager
    def _session(self, *, create: bool = False, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection for one read, or one write transaction (``write``: committed at the end,
        rolled back on any error). A lock, a full disk or damage leaves as one line."""
        try:
            with reporting_disk_full(self.path):
                with closing(self._connect(create=create)) as connection:
                    if write:
                        with connection:
                            yield connection
                    else:
                        yield connection
        except sqlite3.Error as error:
            raise self._error(error) from None

    def _error(self, error: sqlite3.Error) -> StoreError:
        """The one-line error for a failure of SQLite: a lock is a lock, only damage mentions restoring."""
        code, text = sqlite_primary_code(error), str(error)
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "database is locked" in text:
            holders = _open_by(self.path)
            by = f" (open in {', '.join(holders)})" if holders else ""
            return StoreLockedError(
                f"{self.path} is locked by another process{by}: another frugalml writing this study, or a program "
                f"inside a write transaction; gave up after {self.timeout_s:g} s. Run the command again once it "
                f"has finished, or wait longer with {TIMEOUT_ENV}=SECONDS."
            )
        if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return StoreError(
                f"{self.path} is not a readable frugalml results store ({text}): the file is damaged; restore it "
                "from a copy, or run the study again with --fresh (which deletes it)."
            )
        if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM):
            return StoreError(f"cannot open or write the results store {self.path} ({text}); check that its folder "
                              "exists and that you may write there.")
        if code == sqlite3.SQLITE_IOERR:
            return StoreError(f"reading or writing the results store {self.path} failed ({text}); check the disk "
                              f"({free_space(self.path)}).")
        return StoreError(f"{self.path} is not a readable frugalml results store ({text}).")

    @contextmanager
    def run_lock(self) -> Iterator[None]:
        """Held while a study runs (an ``flock`` on ``.frugalml-run.lock``, released by the kernel
        if the process dies): a second ``tune`` of the same study is a :class:`StoreLockedError`
        at once, not a twin running the same trials."""
        import fcntl

        make_owned_dir(self.directory)
        lock_path = self.directory / RUN_LOCK_FILE
        try:
            opened = open(lock_path, "a+")
        except OSError as error:
            raise StoreError(f"cannot write in {self.directory}: {error.strerror or error}; choose a directory you "
                             "can write to.") from None
        with opened as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "unknown"
                raise StoreLockedError(
                    f"the study in {self.directory} is being run by another frugalml (pid {holder}); wait for it "
                    "to finish (or stop it), then run the command again."
                ) from None
            lock.seek(0)
            lock.truncate()
            lock.write(str(os.getpid()))
            lock.flush()
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def check_writable(self) -> None:
        """Take the store's write lock and let it go: a store another process holds is a
        :class:`StoreLockedError` now (after the timeout), not when the first trial ends."""
        if not self.exists:
            return
        with self._session() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")

    def open_study(self, name: str, spec: dict[str, Any]) -> None:
        """Create the store for study ``name``, or check an existing one is the same study."""
        new = not self.exists
        try:
            with self._session(create=True, write=True) as db:
                db.executescript(_SCHEMA)
                row = db.execute("SELECT name FROM study").fetchone()
                if row is None:
                    db.execute("INSERT INTO study VALUES (?, ?, ?)", (name, _dumps(spec), time.time()))
                elif row[0] != name:
                    raise StoreError(
                        f"{self.path} holds study '{row[0]}', not '{name}'; use another directory or the same name."
                    )
        except DiskFullError:
            if new:  # a store without its tables would read as damaged once there is room again
                for suffix in ("", "-wal", "-shm", "-journal"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            raise

    def study(self) -> tuple[str, dict[str, Any]]:
        """The stored study's name and spec."""
        with self._session() as db:
            row = db.execute("SELECT name, spec FROM study").fetchone()
        if row is None:
            raise StoreError(f"{self.path} holds no study.")
        return row[0], json.loads(row[1])

    def save_trial(self, record: TrialRecord) -> None:
        """Write a finished trial atomically (replacing an earlier row with its id)."""
        stop = _dumps(asdict(record.stop)) if record.stop else None
        with self._session(write=True) as db:
            for table in ("trials", "steps", "windows"):
                db.execute(f"DELETE FROM {table} WHERE trial_id = ?", (record.trial_id,))
            db.execute(
                "INSERT INTO trials VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.trial_id, record.number, record.workload, record.config_id, record.repeat,
                    _dumps(dict(record.params)), record.status.value, record.steps_done, record.steps_planned,
                    record.wall_s, record.cpu_s, record.steps_saved, record.cpu_s_saved, stop, record.error,
                    _dumps(dict(record.info)), None, time.time(),
                ),
            )
            db.executemany(
                "INSERT INTO steps VALUES (?,?,?)",
                ((record.trial_id, i + 1, _nan_to_none(loss)) for i, loss in enumerate(record.train_loss)),
            )
            db.executemany(
                "INSERT INTO windows VALUES (?,?,?,?)",
                (
                    (record.trial_id, w.step, name, _nan_to_none(value))
                    for w in record.windows
                    for name, value in w.values.items()
                ),
            )

    def set_mlflow_run(self, trial_id: str, run_id: str) -> None:
        with self._session(write=True) as db:
            db.execute("UPDATE trials SET mlflow_run_id = ? WHERE trial_id = ?", (run_id, trial_id))

    def mlflow_runs(self) -> dict[str, str | None]:
        """trial_id → MLflow run id (None where the trial is not yet logged)."""
        with self._session() as db:
            return dict(db.execute("SELECT trial_id, mlflow_run_id FROM trials").fetchall())

    def trial_ids(self) -> set[str]:
        if not self.exists:
            return set()
        with self._session() as db:
            db.executescript(_SCHEMA)
            return {row[0] for row in db.execute("SELECT trial_id FROM trials")}

    def trials(self, *, with_steps: bool = True) -> list[TrialRecord]:
        """All stored trials, ordered by number."""
        with self._session() as db:
            rows = db.execute("SELECT * FROM trials ORDER BY number").fetchall()
            columns = [d[0] for d in db.execute("SELECT * FROM trials LIMIT 0").description]
            windows: dict[str, dict[int, dict[str, float]]] = {}
            for trial_id, step, name, value in db.execute("SELECT * FROM windows ORDER BY trial_id, step"):
                windows.setdefault(trial_id, {}).setdefault(step, {})[name] = math.nan if value is None else value
            steps: dict[str, list[float]] = {}
            if with_steps:
                for trial_id, _, loss in db.execute("SELECT * FROM steps ORDER BY trial_id, step"):
                    steps.setdefault(trial_id, []).append(math.nan if loss is None else loss)
        return [self._record(dict(zip(columns, row)), windows, steps) for row in rows]

    @staticmethod
    def _record(row: dict[str, Any], windows: dict, steps: dict) -> TrialRecord:
        trial_id = row["trial_id"]
        return TrialRecord(
            trial_id=trial_id, number=row["number"], workload=row["workload"], config_id=row["config_id"],
            repeat=row["repeat"], params=json.loads(row["params"]), status=TrialStatus(row["status"]),
            steps_done=row["steps_done"], steps_planned=row["steps_planned"], wall_s=row["wall_s"],
            cpu_s=row["cpu_s"], steps_saved=row["steps_saved"], cpu_s_saved=row["cpu_s_saved"],
            stop=StopInfo(**json.loads(row["stop"])) if row["stop"] else None, error=row["error"],
            train_loss=tuple(steps.get(trial_id, ())),
            windows=tuple(Window(step, values) for step, values in sorted(windows.get(trial_id, {}).items())),
            info=json.loads(row["info"] or "{}"),
        )


def find_stores(root: str | Path) -> Iterable[Path]:
    """Study directories under ``root`` that hold a results store."""
    root = Path(root)
    return sorted(p.parent for p in root.glob(f"*/{STORE_FILE}"))
