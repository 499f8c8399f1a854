"""The embedded results store: one SQLite file in the study's directory.

Tables: ``study`` (name and spec), ``trials`` (one row per trial, JSON for nested
fields), ``steps`` (training loss per step) and ``windows`` (one row per window
and metric, long format). A trial is written in one transaction when it ends, so
an interrupted study never holds half a trial; running trials are not stored and
are re-run on resume.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from contextlib import closing
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

from frugalml.exceptions import StoreError
from frugalml.records import StopInfo, TrialRecord, TrialStatus, Window

STORE_FILE = "frugalml.db"

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


def _set_wal(connection: sqlite3.Connection, timeout_s: float = 30.0) -> None:
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

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STORE_FILE

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def _connect(self, *, create: bool = False) -> sqlite3.Connection:
        if not create and not self.path.exists():
            raise StoreError(f"No results store at {self.path}; run `frugalml tune` first or check the path.")
        if self.directory.exists() and not self.directory.is_dir():
            raise StoreError(f"{self.directory} is a file; a study needs a folder there. Choose another directory.")
        self.directory.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        try:
            connection = sqlite3.connect(self.path, timeout=30)
            if create:  # persistent in the file, so readers leave it alone
                _set_wal(connection)
            if existed:
                tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                foreign = sorted(t for t in tables - _TABLES if not t.startswith("sqlite_"))
                if foreign:
                    connection.close()
                    raise sqlite3.DatabaseError(f"it holds other tables: {', '.join(foreign)}")
                # only some of ours, or none: a store another process is creating right now
        except sqlite3.Error as error:
            raise StoreError(
                f"{self.path} is not a readable frugalml results store ({error}); restore it from a copy, "
                "or run the study again with --fresh."
            ) from None
        return connection

    def open_study(self, name: str, spec: dict[str, Any]) -> None:
        """Create the store for study ``name``, or check an existing one is the same study."""
        with closing(self._connect(create=True)) as db, db:
            db.executescript(_SCHEMA)
            row = db.execute("SELECT name FROM study").fetchone()
            if row is None:
                import time

                db.execute("INSERT INTO study VALUES (?, ?, ?)", (name, _dumps(spec), time.time()))
            elif row[0] != name:
                raise StoreError(
                    f"{self.path} holds study '{row[0]}', not '{name}'; use another directory or the same name."
                )

    def study(self) -> tuple[str, dict[str, Any]]:
        """The stored study's name and spec."""
        with closing(self._connect()) as db:
            row = db.execute("SELECT name, spec FROM study").fetchone()
        if row is None:
            raise StoreError(f"{self.path} holds no study.")
        return row[0], json.loads(row[1])

    def save_trial(self, record: TrialRecord) -> None:
        """Write a finished trial atomically (replacing an earlier row with its id)."""
        import time

        stop = _dumps(asdict(record.stop)) if record.stop else None
        with closing(self._connect()) as db, db:
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
        with closing(self._connect()) as db, db:
            db.execute("UPDATE trials SET mlflow_run_id = ? WHERE trial_id = ?", (run_id, trial_id))

    def mlflow_runs(self) -> dict[str, str | None]:
        """trial_id → MLflow run id (None where the trial is not yet logged)."""
        with closing(self._connect()) as db:
            return dict(db.execute("SELECT trial_id, mlflow_run_id FROM trials").fetchall())

    def trial_ids(self) -> set[str]:
        if not self.exists:
            return set()
        with closing(self._connect()) as db:
            db.executescript(_SCHEMA)
            return {row[0] for row in db.execute("SELECT trial_id FROM trials")}

    def trials(self, *, with_steps: bool = True) -> list[TrialRecord]:
        """All stored trials, ordered by number."""
        with closing(self._connect()) as db:
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
