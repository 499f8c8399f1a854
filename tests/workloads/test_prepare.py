from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from frugalml.exceptions import ConfigError, DataError
from frugalml.workloads import PreparedData, prepare_dataset, resolve_dataset

from .conftest import DATA_DIR

GOOD_ROWS = "".join(f"{i},{i % 3},{i % 2}\n" for i in range(10))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "is an empty file"),
        ("\n\n", "is empty: no header"),
        ("a,b,target\n", "has a header but no rows"),
        ("a,b,target\n" + GOOD_ROWS + "1,,0\n2,nan,1\n", "NaN or infinite features in 2 rows (columns: b)"),
        ("a,b,target\n" + GOOD_ROWS + "inf,1,0\n", "NaN or infinite features in 1 rows (columns: a)"),
        ("a,b,target\n" + GOOD_ROWS + "1,1,\n", "NaN or infinite targets in 1 rows (column: target)"),
        ("a,b,label\n" + GOOD_ROWS, "no target column 'target'; its columns are: a, b, label; name it: target = \"<column>\" in the workload, --target in frugalml retrain"),
        ("a,b,target\n" + GOOD_ROWS.replace("1,1,", "1,red,", 1) + "3,,1\n",
         "missing values in 1 rows of text column 'b'"),
        ("a,b,target\n1,2,0\n2,3,1\n3,4,0\n", "has 3 rows: too few"),
        ("a,b,target\n" + "".join(f"{i},{i},0\n" for i in range(10)), "single class"),
        ("target\n1\n2\n3\n4\n", "no feature columns"),
    ],
)
def test_malformed_csv_raises_one_line_data_error(tmp_path, text, expected):
    file = tmp_path / "bad.csv"
    file.write_text(text)
    with pytest.raises(DataError) as error:
        prepare_dataset(resolve_dataset(path=file, task="classification"), cache_dir=tmp_path)
    assert "\n" not in str(error.value)
    assert expected in str(error.value)


def test_missing_target_lists_truncated_columns(tmp_path):
    file = tmp_path / "wide.csv"
    pd.DataFrame(np.ones((4, 30)), columns=[f"c{j}" for j in range(30)]).to_csv(file, index=False)
    with pytest.raises(DataError, match=r"c0, c1, .*c7, \.\.\. \(30 in all\)"):
        prepare_dataset(resolve_dataset(path=file), cache_dir=tmp_path)


def test_invalid_settings_raise_config_error():
    source = resolve_dataset("diabetes")
    with pytest.raises(ConfigError, match="test_size"):
        prepare_dataset(source, test_size=1.5)
    with pytest.raises(ConfigError, match="dtype"):
        prepare_dataset(source, dtype="int8")


def test_standardization_uses_training_statistics_only(diabetes):
    raw = pd.read_csv(DATA_DIR / "diabetes.csv.gz")
    features = raw.drop(columns="target").to_numpy(dtype=float)
    train_idx, test_idx = train_test_split(np.arange(len(raw)), test_size=0.3, random_state=0, shuffle=True)
    mean, std = features[train_idx].mean(axis=0), features[train_idx].std(axis=0)
    X_train, y_train, X_test, y_test = diabetes.arrays()

    np.testing.assert_allclose(X_train, (features[train_idx] - mean) / std, atol=1e-12)
    np.testing.assert_allclose(X_test, (features[test_idx] - mean) / std, atol=1e-12)
    assert not np.allclose(X_test.mean(axis=0), 0, atol=1e-2)  # test stats were not used
    assert diabetes.classes == ("tested_negative", "tested_positive")
    np.testing.assert_array_equal(y_train, raw["target"].to_numpy()[train_idx] == "tested_positive")
    assert (diabetes.n_train, diabetes.n_test, diabetes.n_features) == (537, 231, 8)
    np.testing.assert_allclose(diabetes.meta()["scaler_mean"], mean)


def test_arrays_are_read_only_memory_maps(red_wine):
    X_train, y_train, X_test, y_test = red_wine.arrays()
    assert isinstance(X_train, np.memmap) and not X_train.flags.writeable
    assert y_train.dtype == np.float64 and red_wine.classes == () and red_wine.task == "regression"
    assert set(np.unique(y_test)) <= {3.0, 4.0, 5.0, 6.0, 7.0, 8.0}
    assert not isinstance(red_wine.arrays(mmap=False)[0], np.memmap)
    assert PreparedData.load(red_wine.directory) == red_wine


def test_zero_variance_column_gives_zeros_not_nan(tmp_path):
    file = tmp_path / "constant.parquet"
    pd.DataFrame({"a": np.arange(20.0), "const": 7.0, "target": np.arange(20) % 2 * 1.5}).to_parquet(file)
    data = prepare_dataset(resolve_dataset(path=file), cache_dir=tmp_path, dtype="float32")
    X_train, _, X_test, _ = data.arrays()
    assert data.task == "regression" and X_train.dtype == np.float32  # float target -> regression
    assert np.all(X_train[:, 1] == 0) and np.all(X_test[:, 1] == 0)
    assert np.isfinite(X_train).all()


def test_npz_with_string_labels(tmp_path):
    file = tmp_path / "digits.npz"
    rng = np.random.default_rng(0)
    np.savez(file, X=rng.integers(0, 255, (50, 4), dtype=np.uint8), y=np.array(["b", "a"] * 25))
    data = prepare_dataset(resolve_dataset(path=file), cache_dir=tmp_path)
    assert (data.task, data.classes, data.n_train, data.n_test) == ("classification", ("a", "b"), 35, 15)


def test_npz_without_arrays_raises(tmp_path):
    file = tmp_path / "bad.npz"
    np.savez(file, features=np.ones((4, 2)))
    with pytest.raises(DataError, match="must hold arrays 'X' and 'y', but holds: features"):
        prepare_dataset(resolve_dataset(path=file), cache_dir=tmp_path)


def test_prepared_directory_is_reused_without_reloading(tmp_path):
    file = tmp_path / "wine.csv.gz"
    file.write_bytes((DATA_DIR / "red_wine.csv.gz").read_bytes())
    source = resolve_dataset(path=file)
    first = prepare_dataset(source, cache_dir=tmp_path)
    stamp = (first.directory / "X_train.npy").stat()
    started = time.perf_counter()
    second = prepare_dataset(source, cache_dir=tmp_path)
    assert second == first and time.perf_counter() - started < 0.5
    assert (first.directory / "X_train.npy").stat().st_mtime_ns == stamp.st_mtime_ns
    assert prepare_dataset(source, cache_dir=tmp_path, seed=1).directory != first.directory
    file.write_bytes((DATA_DIR / "red_wine.csv.gz").read_bytes()[:-8] + b"\0" * 8)  # other content
    with pytest.raises(DataError):  # a new key: the changed file is read again (and is corrupt)
        prepare_dataset(source, cache_dir=tmp_path)


def test_prepared_directory_is_written_atomically(tmp_path, monkeypatch):
    source = resolve_dataset("red_wine")
    prepared = tmp_path / "prepared"
    real_save = np.save
    calls = []

    def crash_on_second_save(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise OSError("disk full")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", crash_on_second_save)
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset(source, cache_dir=tmp_path)
    assert list(prepared.iterdir()) == []  # neither a half-written result nor the temp dir
    monkeypatch.setattr(np, "save", real_save)

    data = prepare_dataset(source, cache_dir=tmp_path)
    # a writer that was killed mid-way leaves a temp dir named with its (now dead) pid
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = prepared / f".tmp-{data.directory.name}-{int(dead.stdout)}-abcd1234"
    stale.mkdir()
    (stale / "X_train.npy").write_bytes(b"partial")
    for file in data.directory.iterdir():
        file.unlink()
    data.directory.rmdir()
    again = prepare_dataset(source, cache_dir=tmp_path)
    assert again == data and sorted(p.name for p in prepared.iterdir()) == [data.directory.name]
    expected = {"X_train.npy", "y_train.npy", "X_test.npy", "y_test.npy", "meta.json"}
    assert {p.name for p in again.directory.iterdir()} == expected


def test_mnist_is_prepared_quickly_and_shaped(mnist):
    assert (mnist.n_train, mnist.n_test, mnist.n_features) == (49000, 21000, 784)
    assert mnist.classes == tuple(str(d) for d in range(10))
    X_train, y_train, _, _ = mnist.arrays()
    assert X_train.dtype == np.float64 and np.isfinite(X_train[:1000]).all()
    assert y_train.dtype == np.int64 and set(np.unique(y_train)) == set(range(10))
