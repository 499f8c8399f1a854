"""Folders frugalml created, and undoing their creation: only what this run made goes."""

from __future__ import annotations

from frugalml.ownership import make_owned_dir, missing_folders, remove_created


def test_undoing_a_creation_removes_the_marked_folder_and_the_parents_it_made(tmp_path):
    study, created = tmp_path / "new" / "nested" / "study", []
    (make_owned_dir(study, created) / "frugalml.db").write_text("results")
    assert created == [study, study.parent, study.parent.parent]
    remove_created(created)
    assert list(tmp_path.iterdir()) == []


def test_what_another_put_there_stays_and_an_existing_folder_is_not_this_runs(tmp_path):
    study, created = tmp_path / "new" / "study", []
    make_owned_dir(study, created)
    (tmp_path / "new" / "user.txt").write_text("not frugalml's")
    remove_created(created)
    assert not study.exists() and (tmp_path / "new" / "user.txt").exists()  # the parent is not empty

    other, created = tmp_path / "other", []
    make_owned_dir(other, created)
    make_owned_dir(other / "inner")  # another study made inside it meanwhile
    remove_created(created)
    assert (other / "inner").is_dir()

    there, created = tmp_path / "there", []
    there.mkdir()
    make_owned_dir(there, created)
    assert created == [] and missing_folders(there) == []
