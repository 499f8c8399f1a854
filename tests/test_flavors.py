"""What a kept model records about the modules it was pickled from."""

from __future__ import annotations

import sys
import warnings

from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import make_pipeline

from frugalml.flavors import export_mlflow, recorded_modules, save_model
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


class _Doubler:
    def predict(self, X):
        return [2 * row[0] for row in X]


def test_a_model_of_no_known_flavour_exports_without_mlflows_type_hint_warning(tmp_path):
    """Its pyfunc wrapper gives MLflow no type hint to infer a signature from (``Any`` made MLflow
    warn on every trial's model, through any warning filter)."""
    kept, flavor = save_model(_Doubler(), tmp_path / "kept", input_example=[[1.0], [2.0]])
    assert flavor == "mlflow.pyfunc"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exported = export_mlflow(kept, tmp_path / "exported")
    assert not [str(w.message) for w in caught if "type hint" in str(w.message)]
    import mlflow.pyfunc

    assert list(mlflow.pyfunc.load_model(str(exported)).predict([[1.5], [3.0]])) == [3.0, 6.0]
