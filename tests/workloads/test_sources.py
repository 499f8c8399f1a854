from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import frugalml.workloads as workloads
from frugalml.exceptions import DataError
from frugalml.workloads import BUILTIN_DATASETS, resolve_dataset

from .conftest import DATA_DIR


def copy(name: str, folder: Path, as_name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (as_name or name)
    shutil.copyfile(DATA_DIR / name, target)
    return target


def test_all_lists_exactly_the_public_names():
    public = {name for name in dir(workloads) if not name.startswith("_") and name != "annotations"}
    assert sorted(workloads.__all__) == sorted(public)


def test_default_is_the_shared_data_folder():
    source = resolve_dataset("diabetes")
    assert source.path == DATA_DIR / "diabetes.csv.gz"
    assert (source.task, source.target, source.substitute_for) == ("classification", "target", None)
    assert resolve_dataset("red_wine").task == "regression"
    mnist = resolve_dataset("mnist_784")
    assert mnist.path == DATA_DIR / "mnist_784.npz" and mnist.target == "y"


def test_explicit_path_beats_data_dir_arg_beats_env_beats_shared(tmp_path, monkeypatch):
    env_dir, arg_dir = tmp_path / "env", tmp_path / "arg"
    env_file = copy("diabetes.csv.gz", env_dir)
    arg_file = copy("diabetes.csv.gz", arg_dir)
    explicit = copy("diabetes.csv.gz", tmp_path, "mine.csv.gz")
    monkeypatch.setenv("FRUGALML_DATA_DIR", str(env_dir))

    assert resolve_dataset("diabetes", path=explicit, data_dir=arg_dir).path == explicit
    assert resolve_dataset("diabetes", data_dir=arg_dir).path == arg_file
    assert resolve_dataset("diabetes").path == env_file
    # a data dir that lacks the file falls through to the next place
    assert resolve_dataset("red_wine", data_dir=arg_dir).path == DATA_DIR / "red_wine.csv.gz"


def test_explicit_path_takes_its_stem_as_name(tmp_path):
    file = tmp_path / "toy.data.csv.gz"
    shutil.copyfile(DATA_DIR / "red_wine.csv.gz", file)
    source = resolve_dataset(path=file, target="quality")
    assert (source.name, source.path, source.target, source.task) == ("toy.data", file, "quality", None)
    assert resolve_dataset("red_wine", path=file).task == "regression"  # a built-in name keeps its task


def test_cache_datasets_folder_is_searched_last(tmp_path, monkeypatch):
    monkeypatch.setenv("FRUGALML_CACHE_DIR", str(tmp_path))
    cached = copy("diabetes.csv.gz", tmp_path / "datasets", "toy.csv.gz")
    assert resolve_dataset("toy").path == cached
    copy("diabetes.csv.gz", tmp_path / "datasets")
    assert resolve_dataset("diabetes").path == DATA_DIR / "diabetes.csv.gz"


def test_unknown_name_lists_known_names():
    with pytest.raises(DataError) as error:
        resolve_dataset("no_such_data")
    message = str(error.value)
    assert "\n" not in message and all(name in message for name in BUILTIN_DATASETS)


@pytest.mark.parametrize("name", ["missing.csv", "data.xlsx"])
def test_bad_explicit_path(tmp_path, name):
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(DataError, match="dataset file"):
        resolve_dataset(path=tmp_path / name)


def test_casp_protein_is_a_labelled_substitute():
    source = resolve_dataset("casp_protein")
    assert source.substitute_for == "wave_energy" and source.task == "regression"


def test_wave_energy_never_resolves_to_its_substitute(tmp_path, monkeypatch):
    monkeypatch.setenv("FRUGALML_OFFLINE", "1")
    copy("casp_protein.csv.gz", tmp_path)  # present in every searched folder
    monkeypatch.setenv("FRUGALML_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError) as error:
        resolve_dataset("wave_energy", data_dir=tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert "'wave_energy' is not available offline" in message
    assert all(way in message for way in ("path=", "FRUGALML_DATA_DIR", "online"))


def test_wave_energy_file_is_used_when_provided(tmp_path):
    real = copy("red_wine.csv.gz", tmp_path, "wave_energy.csv.gz")  # any file with that name
    source = resolve_dataset("wave_energy", data_dir=tmp_path)
    assert source.path == real and source.substitute_for is None
