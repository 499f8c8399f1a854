"""Download a built-in dataset from OpenML once and keep it in the cache as Parquet."""

from __future__ import annotations

import os
from pathlib import Path

from frugalml.exceptions import DataError, one_line
from frugalml.workloads._sources import DatasetSource, is_offline


def fetch_to_cache(source: DatasetSource, root: Path) -> Path:
    """Return ``<root>/datasets/<name>.parquet``, downloading it from OpenML if absent.

    The OpenML default target is renamed ``target``. The file is written under a
    temporary name and renamed, so a crash never leaves a partial file.
    """
    file = root / "datasets" / f"{source.name}.parquet"
    if file.is_file():
        return file
    if is_offline():
        raise DataError(
            f"dataset {source.name!r} is not available offline: pass path= to a file, "
            f"set FRUGALML_DATA_DIR to a folder holding it, or go online to download it from OpenML."
        )
    from sklearn.datasets import fetch_openml

    openml_name = source.openml_name or source.name
    try:
        bunch = fetch_openml(openml_name, version=1, as_frame=True, data_home=str(root / "openml"))
    except Exception as error:  # network, HTTP or ARFF errors: one line for the user
        raise DataError(f"could not download {openml_name!r} from OpenML: "
                        f"{one_line(error, typed=True, squash=True)}") from error
    frame = bunch.frame.rename(columns={bunch.target_names[0]: "target"})
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, file)
    return file
