from __future__ import annotations

import types

import frugalml.monitors as monitors


def test_all_lists_exactly_the_public_names():
    public = {
        name
        for name, value in vars(monitors).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # the __future__ feature
    }
    assert set(monitors.__all__) == public
    assert monitors.__all__ == sorted(monitors.__all__)
