"""The results store while another process or thread creates it."""

from __future__ import annotations

import threading

from frugalml import ResultStore


def test_a_reader_polling_a_store_being_created_never_takes_it_for_a_damaged_one(tmp_path):
    # `frugalml show`, or a test waiting for trials, may open the file between its creation,
    # the switch to WAL and the tables: that used to fail the reader (a "foreign" store with
    # only some tables) or the creator ("database is locked" from the WAL switch).
    errors = []
    for i in range(150):
        creator, reader = ResultStore(tmp_path / str(i)), ResultStore(tmp_path / str(i))

        def create(store=creator):
            try:
                store.open_study("s", {"name": "s"})
            except Exception as error:  # noqa: BLE001 - collected and asserted below
                errors.append(error)

        thread = threading.Thread(target=create)
        thread.start()
        while thread.is_alive():
            try:
                reader.trial_ids()
            except Exception as error:  # noqa: BLE001
                errors.append(error)
                break
        thread.join()
    assert errors == []
