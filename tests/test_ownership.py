"""Folders frugalml created, and undoing their creation: only what this run made goes."""

from __future__ import annotations

from frugalml.ownership import make_owned_dir, missing_folders, remove_created


def test_undoing_a_creation_removes_the_marked_folder_and_the_parents_it_made(tmp_path):
    study = tmp_path / "new" / "nested" / "study"
    created = missing_folders(study)
    assert created == [study, study.parent, study.parent.parent]
    (make_owned_dir(study) / "frugalml.db").write_text("results")
    remove_created(created)
    assert list(tmp_path.iterdir()) == []


def test_a_parent_that_gained_a_file_stays_and_so_does_an_unmarked_folder(tmp_path):
    study = tmp_path / "new" / "study"
    created = missing_folders(study)
    make_owned_dir(study)
    (tmp_path / "new" / "user.txt").write_text("not frugalml's")
    remove_created(created)
    assert not study.exists() and (tmp_path / "new" / "user.txt").exists()

    unmarked = tmp_path / "mine"
    created = missing_folders(unmarked)
    unmarked.mkdir()  # made by someone else meanwhile: no marker
    remove_created(created)
    assert unmarked.is_dir()
    assert missing_folders(tmp_path) == []
