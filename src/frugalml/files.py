"""Files written whole or not at all, their content hashes, and where frugalml caches files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename: a reader sees all of it or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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
