"""Files written whole or not at all, their content hashes, where frugalml caches files,
and a full disk told in one line."""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Callable

import psutil

from frugalml.exceptions import DiskFullError

# ENOSPC: the filesystem is full; EDQUOT: the user's quota on it is
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename: a reader sees all of it or none.

    The temporary file is removed whatever happens; a full disk is a :class:`DiskFullError`
    naming ``path`` and the space left, and ``path`` keeps its old content.
    """
    path = Path(path)
    # pid and thread: two writers of one path (processes, or threads of one) never share a temporary file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with reporting_disk_full(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "w") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())  # some filesystems (NFS, quotas) report no space only here
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def write_folder_atomic(directory: str | os.PathLike, write: Callable[[Path], None], *, complete: str) -> Path:
    """Let ``write`` fill a temporary sibling folder, then rename it to ``directory``: readers see
    the whole folder or none. Where another writer got there first (its folder holds the file
    ``complete``), that copy is kept. Temporary folders of writers that died are removed."""
    directory = Path(directory)
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".tmp-{directory.name}-*"):
        pid = stale.name.rsplit("-", 2)[-2]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = parent / f".tmp-{directory.name}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        write(tmp)
        try:
            os.rename(tmp, directory)
        except OSError:
            if not (directory / complete).is_file():  # not a concurrent writer's win
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def is_disk_full(error: BaseException | None) -> bool:
    """True when ``error``, or an error it was raised from or while handling, is a full disk
    or quota (``OSError`` ENOSPC/EDQUOT, SQLite's "database or disk is full")."""
    for candidate in _chain(error):
        if isinstance(candidate, DiskFullError):
            return True
        if isinstance(candidate, OSError) and candidate.errno in DISK_FULL_ERRNOS:
            return True
        if isinstance(candidate, sqlite3.Error) and sqlite_primary_code(candidate) == sqlite3.SQLITE_FULL:
            return True
    return False


def sqlite_primary_code(error: sqlite3.Error) -> int | None:
    """SQLite's primary result code of ``error`` (``SQLITE_BUSY``, ``SQLITE_FULL``...), None if it has none."""
    code = getattr(error, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF  # extended codes keep the primary one in the low byte


def free_space(path: str | os.PathLike) -> str:
    """``"12 KB free on /mnt/data"``: the space left on the filesystem that holds ``path``."""
    folder = Path(os.path.abspath(path))
    while not folder.exists() and folder != folder.parent:  # the path itself may be what could not be made
        folder = folder.parent
    try:
        stats = os.statvfs(folder)
    except OSError:
        return "free space unknown"
    free = stats.f_bavail * stats.f_frsize  # what an unprivileged user may use
    mount = folder
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    return f"{_size(free)} free on {mount}"


def disk_full_message(path: str | os.PathLike | None, error: BaseException | None = None) -> str:
    """One line: what filled up, the path being written, the space left, what to do."""
    quota = any(getattr(e, "errno", None) == errno.EDQUOT for e in _chain(error))
    what = "disk quota exceeded" if quota else "no space left on the device"
    where = f"writing {path}" if path is not None else "writing a file (its path was not reported)"
    space = free_space(path if path is not None else os.getcwd())
    return f"{what} {where} ({space}); free some space and run the command again."


@contextmanager
def reporting_disk_full(path: str | os.PathLike) -> Iterator[None]:
    """Turn a full disk inside the block into one :class:`DiskFullError` that names ``path``."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as error:
        if is_disk_full(error):
            raise DiskFullError(disk_full_message(path, error)) from error
        raise


def path_in_traceback(error: BaseException) -> PurePath | None:
    """The path an error was writing, when the error does not name it itself.

    A write that fails when its buffer is flushed (``Path.write_text``, ``np.save``) raises
    an ``OSError`` without a file name; the innermost frame still holds the ``Path`` being
    written (``self`` in ``Path.write_text``). Only that frame is read: an outer one holds
    paths that were not being written.
    """
    for candidate in _chain(error):
        if isinstance(candidate, OSError) and candidate.filename is not None:
            return PurePath(os.fsdecode(candidate.filename))
    for candidate in _chain(error):
        traceback = candidate.__traceback__
        while traceback is not None and traceback.tb_next is not None:
            traceback = traceback.tb_next
        if traceback is not None:
            paths = [value for value in traceback.tb_frame.f_locals.values() if isinstance(value, PurePath)]
            if len(paths) == 1:  # two or more: no telling which one
                return paths[0]
    return None


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    """``error``, then what it was raised from or while handling, and so on."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _size(n_bytes: int) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20)):  # MB = 2**20 bytes, as everywhere in frugalml
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes / 2**10:.0f} KB"


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The frugalml cache: ``cache_dir``, else ``$FRUGALML_CACHE_DIR``, else ``~/.cache/frugalml``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("FRUGALML_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "frugalml"
