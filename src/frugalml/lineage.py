"""Where a model's data came from, and which version: file hashes, DVC revisions, promotions.

:func:`data_lineage` describes a data file (path, size, sha256) and, when DVC tracks it
(``dvc add``), its DVC repository, its path there, the Git commit of ``HEAD``, whether
the working tree differs from that commit, and the md5 DVC records. A study writes it
to ``lineage.json`` when it starts (:func:`write_lineage`); ``frugalml register`` turns
it into ``frugalml.data.*`` tags (:func:`lineage_tags`) and an ``mlflow.data`` input
of the register run (:func:`log_dataset`). :func:`record_promotion` points an alias
at a version and appends the move to the model's ``frugalml.alias_history`` tag, under
a lock (a file lock beside a local store, a registry-side lock on a server);
:func:`model_lineage` reads it all back for ``frugalml lineage``.

DVC (``pip install 'frugalml[lineage]'``) and MLflow are imported only when used: DVC
takes about half a second to import.

Example:
    >>> from frugalml.lineage import data_lineage
    >>> data_lineage("data/train.csv")["dvc"]["md5"]          # doctest: +SKIP
    '7bf20319c955907d9c7d730c2efc00a1'
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import random
import re
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

try:  # the promotion lock on a local store
    import fcntl

    msvcrt = None
except ImportError:  # Windows
    import msvcrt  # type: ignore[no-redef]

from frugalml.exceptions import FrugalError, one_line
from frugalml.files import sha256_file, write_atomic

LINEAGE_FILE = "lineage.json"
DATA_TAG = "frugalml.data."
HISTORY_TAG = "frugalml.alias_history"
HISTORY_LIMIT = 100  # entries kept in the history tag, newest last
HISTORY_MAX_CHARS = 5000  # the registry's tag column is 5000 characters in SQL stores
DIGEST_CHARS = 36  # MLflow's limit on a dataset digest
_MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))?")


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None] | None:
    """``(name, version, alias)`` of ``models:/NAME``, ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``
    (the parts it lacks are None); None for any other URI."""
    match = _MODEL_URI.fullmatch(uri)
    return (match["name"], match["version"], match["alias"]) if match else None


class LineageError(FrugalError, LookupError):
    """A model URI, version or alias cannot be resolved, or an alias cannot be moved."""


# -- data ---------------------------------------------------------------------------------


def data_lineage(path: str | os.PathLike | None, *, dataset: str | None = None) -> dict[str, Any]:
    """Where a dataset came from: its file (path, size, sha256) and, if DVC tracks it, ``dvc``.

    ``dvc`` holds ``repo`` (the DVC root), ``path`` (the file relative to it),
    ``dvc_file``, ``md5`` (as DVC records it), ``rev`` (the Git commit of ``HEAD``),
    ``dirty`` (the file or its ``.dvc`` file differs from that commit) and ``url`` (its
    copy on the default remote, when there is one). A file outside a DVC repository,
    or DVC not installed, gives no ``dvc`` key; a missing file gives ``missing: True``.

    Args:
        path: the data file, or None for a built-in dataset not (yet) on disk.
        dataset: the built-in dataset's name, recorded as ``dataset``.
    """
    lineage: dict[str, Any] = {"dataset": dataset} if dataset else {}
    if path is None:
        return lineage
    file = Path(os.path.abspath(Path(path).expanduser()))  # abspath, not resolve: DVC may symlink to its cache
    if not file.is_file():  # e.g. a path your own training function never reads: noted, not an error
        return {**lineage, "path": str(file), "missing": True}
    lineage.update(path=str(file), size_bytes=file.stat().st_size, sha256=sha256_file(file))
    tracked = _dvc_lineage(file)
    if tracked:
        lineage["dvc"] = tracked
    return lineage


def _dvc_lineage(file: Path) -> dict[str, Any] | None:
    if not any((parent / ".dvc").is_dir() for parent in file.parents):  # no DVC repo: skip DVC's 0.5 s import
        return None
    try:
        from dvc.exceptions import DvcException, NotDvcRepoError, OutputNotFoundError
        from dvc.repo import Repo
    except ImportError:
        return None
    try:
        root = Repo.find_root(str(file.parent))
    except NotDvcRepoError:
        return None
    try:
        with Repo(root) as repo:
            try:  # strict=False: a file inside a directory tracked as a whole
                out = repo.find_outs_by_path(str(file), strict=False)[0]
            except OutputNotFoundError:
                return None
            relative = Path(os.path.relpath(file, repo.root_dir)).as_posix()
            found: dict[str, Any] = {
                "repo": repo.root_dir, "path": relative,
                "dvc_file": Path(os.path.relpath(out.stage.path, repo.root_dir)).as_posix(),
                "md5": _recorded_md5(repo, out, file, relative),
            }
            if out.fs_path != str(file):
                found["out"] = Path(os.path.relpath(out.fs_path, repo.root_dir)).as_posix()
            found.update(_git_state(repo, out))
            if repo.config["core"].get("remote"):
                found["url"] = _remote_url(repo.root_dir, relative)
    except DvcException as error:  # a broken repository must not stop a study; say what is missing
        warnings.warn(f"DVC cannot describe {file} ({error}); its lineage has no DVC revision.", stacklevel=2)
        return None
    return {k: v for k, v in found.items() if v is not None}


def _recorded_md5(repo: Any, out: Any, file: Path, relative: str) -> str | None:
    """The md5 in the ``.dvc`` file; for a file in a tracked directory, its entry in the directory listing."""
    if out.fs_path == str(file):
        return getattr(out.hash_info, "value", None)
    try:
        return repo.dvcfs.info(relative)["dvc_info"].get("md5")
    except (OSError, KeyError):  # the directory listing is not in the local cache (not pulled)
        return None


def _git_state(repo: Any, out: Any) -> dict[str, Any]:
    """``rev`` (HEAD) and ``dirty``: the data differs from its ``.dvc`` record, or that record from HEAD."""
    from dvc.exceptions import DvcException
    from dvc.scm import NoSCM
    from scmrepo.exceptions import SCMError  # what DVC's Git (scmrepo) raises

    if isinstance(repo.scm, NoSCM):  # `dvc init --no-scm`
        return {}
    try:
        rev = repo.scm.get_rev()
    except SCMError:  # no commit yet
        rev = None
    try:
        changed = bool(repo.status(targets=[out.fs_path]))
        staged, unstaged, untracked = repo.scm.status(untracked_files="all")
    except (DvcException, SCMError):  # e.g. another dvc process holds the lock: unknown, not an error
        return {"rev": rev}
    record = Path(os.path.relpath(out.stage.path, repo.scm.root_dir)).as_posix()
    changes = {*unstaged, *untracked, *(p for paths in staged.values() for p in paths)}
    return {"rev": rev, "dirty": changed or record in changes}


def _remote_url(root: str, relative: str) -> str | None:
    import dvc.api
    from dvc.exceptions import DvcException

    try:
        return dvc.api.get_url(relative, repo=root)
    except DvcException:
        return None


# -- the study's record ---------------------------------------------------------------------


def write_lineage(study_dir: str | os.PathLike, workloads: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write ``{workload: lineage}`` to ``<study_dir>/lineage.json`` (a temporary file, then a rename)."""
    body = {"recorded_at": _now(), "workloads": {str(k): dict(v) for k, v in workloads.items()}}
    return write_atomic(Path(study_dir) / LINEAGE_FILE, json.dumps(body, indent=1, sort_keys=True))


def read_lineage(study_dir: str | os.PathLike, workload: str) -> dict[str, Any] | None:
    """The lineage the study recorded for ``workload``; None for a study from before lineage.json."""
    try:
        return json.loads((Path(study_dir) / LINEAGE_FILE).read_text())["workloads"][workload]
    except (OSError, ValueError, KeyError):
        return None


def lineage_tags(lineage: Mapping[str, Any]) -> dict[str, str]:
    """Flat ``frugalml.data.*`` tags: ``sha256``, ``path``, ``dvc.rev``, ``dvc.md5``, ``dvc.path`` ..."""
    tags: dict[str, str] = {}

    def flatten(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                flatten(f"{prefix}{key}.", inner)
        elif value is not None:
            tags[prefix[:-1]] = str(value).lower() if isinstance(value, bool) else str(value)

    flatten(DATA_TAG, lineage)
    return tags


def _from_tags(tags: Mapping[str, str]) -> dict[str, Any]:
    """:func:`lineage_tags` undone (values stay strings)."""
    lineage: dict[str, Any] = {}
    for key, value in sorted(tags.items()):
        if key.startswith(DATA_TAG):
            *parents, leaf = key[len(DATA_TAG):].split(".")
            node = lineage
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = value
    return lineage


def log_dataset(lineage: Mapping[str, Any], frame_or_arrays: Any, context: str = "training", *,
                targets: str | None = None) -> Any:
    """Log an ``mlflow.data`` input on the active run: the data, its source, name and digest.

    The source is the file's copy on the DVC remote when there is one, else the file;
    the digest is the file's sha256 (its first 36 characters, MLflow's limit); the
    DVC revision and md5 are input tags.

    Args:
        lineage: from :func:`data_lineage`.
        frame_or_arrays: a DataFrame (``targets`` names its target column), an array, or ``(X, y)``.
        context: e.g. ``"training"``.
    """
    import mlflow
    import mlflow.data
    import pandas as pd
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.exceptions import MlflowException

    tracked = lineage.get("dvc") or {}
    source = lineage.get("path")
    if tracked.get("url"):
        try:
            source = resolve_dataset_source(tracked["url"])
        except MlflowException:  # a remote MLflow has no source type for (ssh://, gdrive://): the file
            pass
    name = lineage.get("dataset") or (Path(lineage["path"]).name if lineage.get("path") else None)
    digest = str(lineage["sha256"])[:DIGEST_CHARS] if lineage.get("sha256") else None
    with warnings.catch_warnings():  # MLflow registers its local-file source twice and warns about it
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
        if isinstance(frame_or_arrays, pd.DataFrame):
            dataset = mlflow.data.from_pandas(frame_or_arrays, source=source, targets=targets, name=name,
                                              digest=digest)
        else:
            X, y = frame_or_arrays if isinstance(frame_or_arrays, tuple) else (frame_or_arrays, None)
            dataset = mlflow.data.from_numpy(X, source=source, targets=y, name=name, digest=digest)
    tags = {f"dvc.{k}": str(tracked[k])[:500] for k in ("rev", "md5", "path") if tracked.get(k)}
    mlflow.log_input(dataset, context=context, tags=tags or None)
    return dataset


# -- promotions -------------------------------------------------------------------------------


def record_promotion(client: Any, name: str, alias: str, version: str | int, reason: str,
                     run_id: str | None = None) -> dict[str, Any]:
    """Point ``alias`` of model ``name`` at ``version`` and append the move to ``frugalml.alias_history``.

    The history is a JSON list in a registered-model tag, newest last, bounded to the
    last 100 moves (fewer if they would pass 5000 characters). Reading the alias, moving
    it and writing the history happen under one promotion lock, so concurrent promotions
    of a model all reach the history, in the order the alias moved, each ``previous``
    naming the entry before it:

    - a local store (``sqlite:///FILE``, a ``file:`` store or a bare path) is locked with
      an OS file lock on ``<store>.frugalml-promotion.lock`` beside it, released by the
      kernel if the process dies;
    - any other registry (a tracking server, a database server) is locked on the
      registry itself: the lock is a registered model ``<name>.frugalml-promotion-lock``,
      whose creation is the registry's atomic create-if-absent; it is deleted when the
      promotion is recorded, and one left by a killed process is broken after 60 s.

    A lock not obtained within 60 s is a :class:`LineageError`, and nothing is moved.

    Returns:
        the entry: ``alias``, ``version``, ``previous`` (the version it pointed at, or None),
        ``at`` (ISO time, UTC), ``reason`` and ``run_id``.
    """
    from mlflow.exceptions import MlflowException

    try:
        with _promotion_lock(client, name):
            model = client.get_registered_model(name)
            previous = (model.aliases or {}).get(alias)
            entry = {"alias": alias, "version": str(version),
                     "previous": None if previous is None else str(previous),
                     "at": _now(), "reason": str(reason)[:300], "run_id": run_id}
            client.set_registered_model_alias(name, alias, str(version))
            client.set_registered_model_tag(name, HISTORY_TAG, _bounded(_history(model.tags) + [entry]))
    except MlflowException as error:
        raise LineageError(f"cannot point alias {alias!r} of model {name!r} at version {version}: "
                           f"{one_line(error)}") from None
    return entry


PROMOTION_LOCK_SUFFIX = ".frugalml-promotion.lock"  # beside a local store
PROMOTION_LOCK_MODEL = "{name}.frugalml-promotion-lock"  # in a remote registry
PROMOTION_LOCK_TIMEOUT_S = 60.0  # longest wait for another promotion (one takes well under a second)
PROMOTION_LOCK_LEASE_S = 60.0  # a registry lock older than this was left by a killed process


@contextlib.contextmanager
def _promotion_lock(client: Any, name: str) -> Iterator[None]:
    """Held while one promotion of ``name`` reads the alias, moves it and appends to the history."""
    uri = getattr(client, "_registry_uri", None)  # MlflowClient keeps it only there; a stand-in may lack it
    if uri is None:
        import mlflow

        uri = mlflow.get_registry_uri()
    store = _local_store(uri)
    with _file_lock(Path(f"{store}{PROMOTION_LOCK_SUFFIX}")) if store else _registry_lock(client, name):
        yield


def _local_store(uri: str | None) -> Path | None:
    """The file or folder of a store on this machine's file system; None for a server."""
    if not uri or uri.startswith("databricks"):
        return None
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):].split("?")[0]
        return Path(path) if path not in ("", ":memory:") else None
    if uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))
    return Path(uri) if "://" not in uri else None  # a bare path is a file store


def store_problem(uri: str, must_exist: bool = True) -> str | None:
    """What is wrong with ``uri`` as the store of models to read (``must_exist``) or to register into,
    in one line, or None. MLflow would create an empty store where a ``sqlite:///`` file or a
    folder store is not (and then say the model is not found), and takes a bare path to an
    SQLite file for a folder store (a traceback from deep inside)."""
    local = _local_store(uri)
    if local is None:
        return None
    sqlite = uri.startswith("sqlite:///")
    if not sqlite and local.is_file():
        return (f"{uri} is a file, not a tracking URI; an SQLite store is named sqlite:///{local.resolve()} "
                "(the URI `frugalml register` printed).")
    if must_exist and not (local.is_file() if sqlite else local.is_dir()):
        return f"no MLflow store at {uri}; pass the tracking URI `frugalml register` printed."
    return None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive OS lock on ``path`` (created if missing and never removed: a removed
    lock file would let the next two promotions lock two different files)."""
    try:
        handle = open(path, "a+b")
    except OSError as error:
        raise LineageError(f"cannot open the promotion lock {path}: {error.strerror}; "
                           "the store's folder must be writable to promote.") from None
    with handle:
        _wait_for(lambda: _try_lock_file(handle),
                  f"another process has held the promotion lock {path} for {PROMOTION_LOCK_TIMEOUT_S:g} s "
                  f"(a promotion takes well under a second); `lsof {path}` shows which")
        try:
            yield
        finally:
            _unlock_file(handle)


def _try_lock_file(handle: Any) -> bool:
    try:
        if msvcrt is not None:
            handle.seek(0)  # msvcrt locks bytes from the position: the first one
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError (POSIX) or PermissionError (Windows): held by another process
        return False
    return True


def _unlock_file(handle: Any) -> None:
    if msvcrt is not None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _registry_lock(client: Any, name: str) -> Iterator[None]:
    """A lock every client of the registry sees: a registered model that exists only while held."""
    from mlflow.exceptions import MlflowException

    lock, token = PROMOTION_LOCK_MODEL.format(name=name), uuid.uuid4().hex

    def acquire() -> bool:
        try:  # one insert: the registry refuses a second model of that name (RESOURCE_ALREADY_EXISTS)
            client.create_registered_model(lock, tags={"frugalml.lock.token": token},
                                           description=f"held while a promotion of {name!r} is recorded")
            return True
        except MlflowException as error:  # held; a SQL store says "does not exist" if released as it refused
            if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        _break_if_stale(client, lock)
        return False

    _wait_for(acquire, f"another promotion of {name!r} has held the registry lock {lock!r} for "
                       f"{PROMOTION_LOCK_TIMEOUT_S:g} s (a promotion takes well under a second)")
    try:
        yield
    finally:
        try:
            if client.get_registered_model(lock).tags.get("frugalml.lock.token") == token:  # still ours
                client.delete_registered_model(lock)
        except MlflowException:  # already broken as stale by another process
            pass


def _break_if_stale(client: Any, lock: str) -> None:
    """Delete a registry lock created over PROMOTION_LOCK_LEASE_S ago (its holder was killed).

    The age is the lock's creation time, part of the model's own record: its tags are
    read separately and come back empty when the lock changes hands in between.
    """
    from mlflow.exceptions import MlflowException

    try:
        if client.get_registered_model(lock).creation_timestamp / 1000 + PROMOTION_LOCK_LEASE_S < time.time():
            client.delete_registered_model(lock)
    except MlflowException:  # released meanwhile, or broken by another waiter
        pass


def _wait_for(acquire: Callable[[], bool], message: str) -> None:
    """Call ``acquire`` until it is True, pausing 5-100 ms between tries; a LineageError after the timeout."""
    deadline, pause = time.monotonic() + PROMOTION_LOCK_TIMEOUT_S, 0.005
    while not acquire():
        if time.monotonic() > deadline:
            raise LineageError(message + ".")
        time.sleep(pause * random.uniform(0.5, 1.5))  # jitter: waiters do not retry in lockstep
        pause = min(pause * 2, 0.1)


def _history(tags: Mapping[str, str] | None) -> list[dict[str, Any]]:
    try:
        history = json.loads((tags or {}).get(HISTORY_TAG) or "[]")
    except ValueError:  # an edited, broken tag: start again rather than fail a promotion
        return []
    return history if isinstance(history, list) else []


def _bounded(history: list[dict[str, Any]]) -> str:
    """The newest entries, at most HISTORY_LIMIT of them and HISTORY_MAX_CHARS of JSON."""
    kept = history[-HISTORY_LIMIT:]
    text = json.dumps(kept)
    while len(text) > HISTORY_MAX_CHARS and len(kept) > 1:
        kept = kept[1:]
        text = json.dumps(kept)
    return text


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# -- reading it back ------------------------------------------------------------------------


def model_lineage(model_uri: str, tracking_uri: str | None) -> dict[str, Any]:
    """Data → study → trial → model → alias history of ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    parsed = parse_model_uri(model_uri)
    if parsed is None or parsed[1] is parsed[2] is None or not (parsed[1] or "0").isdigit():
        raise LineageError(f"a model URI must be models:/NAME/VERSION or models:/NAME@ALIAS, but got {model_uri!r}.")
    if not tracking_uri:  # MLflow would fall back to ./mlflow.db, creating an empty store
        raise LineageError(f"{model_uri!r} needs the tracking store it is registered in: pass --tracking-uri "
                           "(`frugalml register` prints it) or set MLFLOW_TRACKING_URI.")
    if problem := store_problem(tracking_uri):
        raise LineageError(problem)
    name, number, alias = parsed
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        try:
            model = client.get_registered_model(name)
        except MlflowException:
            raise LineageError(f"no registered model {name!r} at {tracking_uri}; "
                               "`frugalml register` prints the name it registered.") from None
        aliases = dict(model.aliases or {})
        if alias is not None and alias not in aliases:
            raise LineageError(f"model {name!r} has no alias {alias!r} (its aliases: "
                               f"{', '.join(sorted(aliases)) or 'none'}).")
        try:
            version = client.get_model_version(name, number or aliases[alias])
        except MlflowException:
            raise LineageError(f"model {name!r} has no version {number} (its versions: "
                               f"{_versions(client, name)}).") from None
    except MlflowException as error:
        raise LineageError(f"cannot read {model_uri} at {tracking_uri}: {one_line(error)}") from None
    tags = dict(version.tags or {})
    params = tags.get("frugalml.params")
    created = datetime.datetime.fromtimestamp(version.creation_timestamp / 1000, datetime.timezone.utc)
    return {
        "data": _from_tags(tags),
        "study": {"name": tags.get("frugalml.study"), "dir": tags.get("frugalml.study_dir"),
                  "workload": tags.get("frugalml.workload")},
        "trial": {"config_id": tags.get("frugalml.config_id"), "params": json.loads(params) if params else None,
                  "trial": tags.get("frugalml.trial") or tags.get("frugalml.trials"),
                  "model_uri": tags.get("frugalml.trial_model_uri")},  # the trial run's own model, when logged
        "model": {"name": name, "version": str(version.version), "run_id": version.run_id,
                  "created": created.isoformat(timespec="seconds"),
                  "aliases": sorted(a for a, v in aliases.items() if str(v) == str(version.version)),
                  "gate": tags.get("frugalml.gate")},
        "history": _history(model.tags),
    }


def _versions(client: Any, name: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        quote = '"' if "'" in name else "'"  # names never hold both (frugalml.names forbids ")
        numbers = sorted(int(v.version) for v in client.search_model_versions(f"name = {quote}{name}{quote}"))
    except MlflowException:
        return "unknown"
    shown = ", ".join(map(str, numbers[-10:]))
    return (f"..., {shown}" if len(numbers) > 10 else shown) or "none"
