"""Shipping a prepared dataset to Ray nodes that lack its directory: once into the object
store on the driver, once per node into its frugalml cache."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frugalml.executors._ray_connect import import_ray
from frugalml.files import cache_root, write_folder_atomic


@dataclass(frozen=True)
class ShippedData:
    """A prepared dataset plus an object-store copy for nodes that lack its directory."""

    data: Any  # frugalml.workloads.PreparedData
    arrays: Any  # ObjectRef of {file name: ndarray or bytes}


def ship(data: Any) -> ShippedData:
    """Put the files of a :class:`~frugalml.workloads.PreparedData` into the object store."""
    ray = import_ray()
    from frugalml.workloads import ARRAY_NAMES  # lazy: scikit-learn; only built-in data is shipped

    files: dict[str, Any] = dict(zip((f"{n}.npy" for n in ARRAY_NAMES), data.arrays(mmap=True)))
    files["meta.json"] = (data.directory / "meta.json").read_bytes()
    return ShippedData(data, ray.put(files))


def localize(value: Any) -> Any:
    """On a node: the dataset itself when its directory exists here (a shared or same
    file system), else a copy written once per node from the object store into the
    node's frugalml cache, written to a temporary folder and renamed into place."""
    if not isinstance(value, ShippedData):
        return value
    if (Path(value.data.directory) / "meta.json").is_file():
        return value.data
    import numpy as np

    from frugalml.workloads import PreparedData  # lazy: scikit-learn, on a node that needs the data

    target = cache_root() / "prepared" / Path(value.data.directory).name
    if not (target / "meta.json").is_file():
        files = import_ray().get(value.arrays)

        def write(folder: Path) -> None:
            for name, content in files.items():
                if isinstance(content, bytes):
                    (folder / name).write_bytes(content)
                else:
                    np.save(folder / name, content)

        write_folder_atomic(target, write, complete="meta.json")  # another trial on this node may write it first
    return PreparedData.load(target)


def is_prepared(value: Any) -> bool:
    """Whether ``value`` is a :class:`~frugalml.workloads.PreparedData`, without importing scikit-learn."""
    workloads = sys.modules.get("frugalml.workloads")  # loaded by the tuner for built-in workloads
    return workloads is not None and isinstance(value, workloads.PreparedData)
