"""Folders frugalml created, marked as such: the only ones it ever deletes whole.

A study folder gets a marker file when frugalml creates it. ``--fresh`` (and any other
clean-up) removes a marked folder; an unmarked one (made by the user, or by a version
before markers) loses only the entries frugalml writes there, and only when it holds
nothing else. A path built from user text is never enough to delete anything.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

from frugalml.exceptions import ConfigError, DiskFullError
from frugalml.files import disk_full_message, is_disk_full

STUDIES_ROOT = "studies"  # where studies go without a [study] directory, and where the CLI looks
MARKER = ".frugalml-study"
# what a study folder of an older version holds; an unmarked folder is cleared only when it holds these alone
OWN_ENTRIES = frozenset({
    "frugalml.db", "frugalml.db-wal", "frugalml.db-shm", "frugalml.db-journal", "mlflow.db", "mlflow.db-wal",
    "mlflow.db-shm", "mlflow.db-journal", "mlartifacts", "mlruns", "artifacts", "lineage.json", MARKER,
    ".frugalml-run.lock", "retrain.json", "report",
    "mlflow.db.frugalml-promotion.lock",  # lineage.record_promotion's lock
})


def make_owned_dir(path: str | os.PathLike, created: list[Path] | None = None) -> Path:
    """Create ``path`` (and its parents) and mark it as frugalml's; an existing folder is left
    unmarked. ``created``, when given, receives the folders this call made, deepest first (none
    when ``path`` was there already): what :func:`remove_created` may undo."""
    path = Path(path)
    missing = missing_folders(path) if created is not None else []
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        if not path.is_dir():
            raise ConfigError(f"{path} is a file; a study needs a folder there. Choose another directory.") from None
        return path
    except OSError as error:
        if is_disk_full(error):
            raise DiskFullError(disk_full_message(path, error)) from None
        raise ConfigError(f"cannot create the folder {path}: {error.strerror or error}; "
                          "choose a directory you can write to.") from None
    (path / MARKER).write_text("Created by frugalml; `frugalml tune --fresh` may delete this folder.\n")
    if created is not None:
        created[:] = missing
    return path


def is_owned(path: str | os.PathLike) -> bool:
    """True for a folder frugalml created (it holds the marker), not through a symlink."""
    path = Path(path)
    return path.is_dir() and not path.is_symlink() and (path / MARKER).is_file()


def remove_owned(path: str | os.PathLike, keep: frozenset[str] = frozenset()) -> None:
    """Delete what frugalml wrote in ``path``: all of it if frugalml created the folder,
    else its own entries, and only if nothing else is there (a one-line error otherwise).
    Entries named in ``keep`` (a held lock file) stay, and so does the folder itself."""
    path = Path(path)
    if not path.exists():
        return
    nested = next((p.parent for name in (MARKER, "frugalml.db") for p in path.glob(f"*/**/{name}")), None)
    if nested is not None:  # another study kept inside this one's folder is never frugalml's to clear here
        raise ConfigError(f"{path} holds another study's folder ({nested}); --fresh deletes nothing there. Move that "
                          "study out, or remove the results yourself.")
    if is_owned(path):
        _remove_entries(path, keep | {MARKER})
        return
    if path.is_symlink() or not path.is_dir():
        raise ConfigError(f"{path} is not a folder frugalml created; --fresh deletes nothing there. "
                          "Remove it yourself, or choose another directory.")
    if foreign := _foreign_entries(path):
        shown = ", ".join(ascii(name)[1:-1] for name in foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise ConfigError(f"{path} was not created by frugalml and holds other files ({shown}); --fresh deletes "
                          "nothing there. Remove the study's results yourself, or choose another directory.")
    _remove_entries(path, keep)


def _foreign_entries(path: Path) -> list[str]:
    """The names in ``path`` that frugalml does not write, sorted."""
    return sorted(entry.name for entry in path.iterdir() if entry.name not in OWN_ENTRIES)


def _remove_entries(path: Path, keep: frozenset[str]) -> None:
    for entry in path.iterdir():
        if entry.name not in keep:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def missing_folders(path: str | os.PathLike) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first (a folder that
    cannot be looked at counts as there)."""
    missing = []
    for folder in (Path(path).absolute(), *Path(path).absolute().parents):
        try:
            if folder.exists() or folder.is_symlink():
                break
        except OSError:
            break
        missing.append(folder)
    return missing


def remove_created(folders: Sequence[Path]) -> None:
    """Undo :func:`make_owned_dir`'s creation of ``folders`` (its ``created``): the first one, the
    marked study folder, while it holds only what frugalml writes; then each parent while it is
    empty. Best effort: whatever cannot be removed stays."""
    if not folders or not is_owned(folders[0]):
        return
    try:
        if _foreign_entries(folders[0]):
            return  # something else went in since (another study, the user's file): not this run's to delete
        shutil.rmtree(folders[0])
        for parent in folders[1:]:
            parent.rmdir()
    except OSError:  # held open, permissions, or a parent that is not empty: it stays
        return
