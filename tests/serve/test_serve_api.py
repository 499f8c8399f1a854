"""The public API of frugalml.serve is deliberate: __all__ lists exactly its public names."""

from __future__ import annotations


def test_public_api_lists_exactly_its_names():
    import frugalml.serve as serve

    public = {name for name in vars(serve) if not name.startswith("_")} - {"annotations", "Any"}
    assert set(serve.__all__) == public | set(serve._LAZY)  # the lazy names too (PEP 562)
    assert serve.__all__ == sorted(serve.__all__)
    assert all(getattr(serve, name) is not None for name in serve._LAZY)
