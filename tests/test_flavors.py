"""What a kept model records about the modules it was pickled from."""

from __future__ import annotations

import sys

from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import make_pipeline

from frugalml.flavors import recorded_modules, save_model
from frugalml.integrations.sklearn import fit


def test_a_kept_model_records_the_users_own_modules_only(tmp_path, monkeypatch):
    """The user's module, with its folder for the hint that says what to put on PYTHONPATH; not the
    installed distributions it also names (scikit-learn, in site-packages) nor an editable install
    outside site-packages (frugalml, in this repository's src)."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "mymodels.py").write_text("class Shift:\n    def __init__(self, inner):\n        self.inner = inner\n\n"
                                      "    def predict(self, X):\n        return self.inner.predict(X)\n")
    monkeypatch.syspath_prepend(str(code))
    import mymodels

    model = mymodels.Shift([make_pipeline(SGDClassifier()), fit])
    try:
        kept, flavor = save_model(model, tmp_path / "kept")
    finally:
        sys.modules.pop("mymodels", None)
    assert flavor == "mlflow.pyfunc"
    assert recorded_modules(kept) == {"mymodels": str(code)}
