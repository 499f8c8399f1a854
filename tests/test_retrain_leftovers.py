"""A retrain killed mid-run leaves its ``<study>-retrain-N`` folder; the next retrain resumes it
(same data) or clears it (other data), never piling up unfinished folders."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from frugalml import ResultStore, Search, Study, Workload, tune
from frugalml.ownership import MARKER
from frugalml.retrain import DONE_FILE, retrain_study

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "diabetes.csv.gz"


def test_an_unfinished_retrain_folder_is_resumed_on_the_same_data_and_cleared_on_other_data(tmp_path):
    frame = pd.read_csv(DATA)
    frame.to_csv(tmp_path / "base.csv", index=False)
    frame.iloc[::-1].to_csv(tmp_path / "new.csv", index=False)
    frame.iloc[::-1].to_csv(tmp_path / "same-bytes.csv", index=False)  # another path, the same data
    frame.assign(plas=frame["plas"] + 1.0).to_csv(tmp_path / "other.csv", index=False)
    study = Study(name="base", workloads=[Workload(path=str(tmp_path / "base.csv"), algorithm="svm", eval_every=10)],
                  search=Search(space={"batch_size": [64], "learning_rate": [0.01, 0.1]}),
                  directory=str(tmp_path / "base"), mlflow_uri=None)
    tune(study)

    killed = retrain_study(tmp_path / "base", tmp_path / "new.csv", top=1)
    assert Path(killed.directory).name == "base-retrain-1"
    first = tune(killed)  # trained, then killed before the gate: no retrain.json
    assert (Path(killed.directory) / MARKER).is_file() and not (Path(killed.directory) / DONE_FILE).exists()

    again = retrain_study(tmp_path / "base", tmp_path / "same-bytes.csv", top=1)
    assert again.directory == killed.directory  # resumed (the data's bytes match), not base-retrain-2
    resumed = tune(again, resume=True)
    assert [r.trial_id for r in resumed.records] == [r.trial_id for r in first.records]  # nothing repeated

    (tmp_path / "new.csv").write_text((tmp_path / "other.csv").read_text())  # same path, new bytes: not resumed
    changed = retrain_study(tmp_path / "base", tmp_path / "new.csv", top=1)
    assert changed.directory == killed.directory and not ResultStore(changed.directory).exists
    tune(changed)

    other = retrain_study(tmp_path / "base", tmp_path / "same-bytes.csv", top=1)  # differs from what it ran on
    assert other.directory == killed.directory and not ResultStore(other.directory).exists  # cleared for new data
    assert [p.name for p in Path(other.directory).iterdir()] == [MARKER]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["base", "base-retrain-1"]

    tune(other)
    (Path(killed.directory) / DONE_FILE).write_text("{}")  # it registered something: kept, the next gets a new number
    assert Path(retrain_study(tmp_path / "base", tmp_path / "new.csv", top=1).directory).name == "base-retrain-2"
    assert ResultStore(killed.directory).exists
