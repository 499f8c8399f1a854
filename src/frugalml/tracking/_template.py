"""New SQLite MLflow stores start as a copy of a migrated, empty template.

MLflow builds a new SQLite store by running every alembic migration (1-3 s); every
study, and every registry a test makes, would pay that. Here the migrations run once
per MLflow version and schema head, into a template in the frugalml cache
(``<cache>/mlflow/empty-store-<version>-<head>.db``), and a new store is a copy of it.

The template holds MLflow's schema and nothing of any store: no experiment. MLflow
itself adds the ``Default`` experiment (id 0) to the copy, as it does to a store it
creates, with one difference: its artifact root is ``mlruns`` beside the store, not
``./mlruns`` of whatever folder the process ran in, so a study folder keeps its own
artifacts. A copy is finished under a temporary name and linked into place, so no
process ever opens half a store, and a store another process made meanwhile wins.

Every path that cannot make the copy (no cache, a read-only folder, a file system
without hard links, an MLflow whose internals moved) leaves the store to MLflow, as
before: slower, never wrong.

Cost (2-core machine, MLflow 3.17, medians of 5): a new store and its first open took
0.92 s by MLflow's migrations and 0.05 s as a copy in a process that had made one before;
1.42 s and 0.79 s in a fresh process (most of that importing alembic and the store, which
the first open needs anyway). Building the template: once, ~2.6 s.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import uuid
from pathlib import Path

from frugalml.files import cache_root

_logger = logging.getLogger(__name__)

ARTIFACT_FOLDER = "mlruns"  # the Default experiment's artifacts: <store folder>/mlruns/0, as MLflow's ./mlruns/0


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` store URI (query stripped), or None for any other URI or an in-memory one."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].partition("?")[0]
    return Path(path) if path not in ("", ":memory:") else None


def seed_sqlite_store(uri: str) -> None:
    """Create the ``sqlite:///`` store at ``uri`` as a copy of the cached empty template.

    Other URIs, and a store file that exists, are left alone; so is a store this cannot
    copy (MLflow then creates it itself on first use).
    """
    path = sqlite_path(uri)
    if path is None or path.exists():
        return
    _forget_engine(uri)  # one MLflow cached for an earlier file at this path (deleted since) writes nowhere
    try:
        _copy_template(path)
    except Exception as error:  # noqa: BLE001 - any failure here only costs MLflow's own (slower) creation
        _logger.debug("MLflow creates %s itself: %s", path, error)


def template_path() -> Path:
    """The cached empty store of this MLflow version and schema head, made on first use."""
    template = cache_root() / "mlflow" / f"empty-store-{_schema_key()}.db"
    if not template.is_file():
        _make_template(template)
    return template


@functools.cache
def _schema_key() -> str:
    """``<MLflow version>-<alembic head>``, read once per process (alembic loads ~130 scripts for it: ~20 ms)."""
    import mlflow
    from mlflow.store.db.utils import _get_latest_schema_revision

    return f"{mlflow.__version__}-{_get_latest_schema_revision()}"


def _make_template(template: Path) -> None:
    """Run MLflow's migrations into a new file and move it into place (two makers: the last rename wins, both whole)."""
    from mlflow.store.db.utils import _get_latest_schema_revision, _get_schema_version, _initialize_tables
    from mlflow.store.db.utils import create_sqlalchemy_engine

    tmp = _temporary_beside(template)
    try:
        engine = create_sqlalchemy_engine(f"sqlite:///{tmp}")
        quiet = logging.getLogger("mlflow.store.db.utils")  # its INFO lines on creating tables, once per version
        level = quiet.level
        quiet.setLevel(max(level, logging.WARNING))
        try:
            _initialize_tables(engine)  # the schema only: SqlAlchemyStore would add the Default experiment
            migrated = _get_schema_version(engine)
        finally:
            quiet.setLevel(level)
            engine.dispose()
        if migrated != _get_latest_schema_revision():  # an alembic that stopped short: no template of it
            raise RuntimeError(f"the template's schema is {migrated}, not MLflow's head")
        os.replace(tmp, template)
    finally:
        tmp.unlink(missing_ok=True)


def _copy_template(path: Path) -> None:
    """Copy the template beside ``path``, let MLflow add its Default experiment, then link it in as ``path``."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    template = template_path()
    tmp = _temporary_beside(path)
    tmp_uri = f"sqlite:///{tmp}"
    try:
        shutil.copyfile(template, tmp)
        SqlAlchemyStore(tmp_uri, str(path.parent.resolve() / ARTIFACT_FOLDER))  # creates experiment 0
        _forget_engine(tmp_uri)
        try:
            os.link(tmp, path)  # never over a store another process created meanwhile
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def _forget_engine(uri: str) -> None:
    """Close and forget the engine MLflow caches for ``uri``, so that the next store there is
    opened afresh (not through a file deleted since: a folder --fresh or a failed first trial removed)."""
    module = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")
    engine = getattr(module.SqlAlchemyStore, "_engine_map", {}).pop(uri, None) if module is not None else None
    if engine is not None:
        engine.dispose()


def _temporary_beside(path: Path) -> Path:
    """A name in ``path``'s folder (made if needed) that no other process or thread uses. Not created here:
    the copy gets the permissions a new file gets (``mkstemp``'s 0600 would lock other users out of the store)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")
