"""The README's adapter snippets are the adapters' own docstring examples, and they run as written.

Each snippet is executed unchanged, with the data and model builder it leaves to the
reader (tests/integrations/snippet_context.py), as the training function of a real
study run by the in-process executor (the adapter tests run each framework in worker
processes under budgets).
"""

from __future__ import annotations

import importlib
import os
import textwrap

import pytest

import snippet_context
from frugalml import Search, Study, TrialStatus, Workload, tune
from frugalml.executors import InProcessExecutor
from helpers import TESTS

README = (TESTS.parent / "README.md").read_text()

# adapter module -> (context, search space, keyword arguments for a short run)
SNIPPETS = {
    "xgboost": (snippet_context.context_tabular, {"max_depth": [2]}, {"rounds": 20}),
    "lightgbm": (snippet_context.context_tabular, {"num_leaves": [7]}, {"rounds": 20}),
    "sklearn": (snippet_context.context_tabular, {"max_depth": [3]}, {}),
    "torch": (snippet_context.context_torch, {"hidden": [16], "lr": [0.01]}, {"epochs": 1}),
    "lightning": (snippet_context.context_lightning, {"hidden": [16], "lr": [0.01]}, {"epochs": 1}),
    "keras": (snippet_context.context_keras, {"hidden": [16]}, {"epochs": 1}),
    "transformers": (snippet_context.context_transformers, {"lr": [0.001]}, {"epochs": 1}),
}


def snippet(framework: str) -> str:
    """The ``Example::`` block of ``frugalml.integrations.<framework>``'s docstring, dedented."""
    doc = importlib.import_module(f"frugalml.integrations.{framework}").__doc__
    block = doc.split("Example::\n\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines)).strip() + "\n"


@pytest.mark.parametrize("framework", list(SNIPPETS))
def test_the_readme_shows_the_adapters_example_verbatim(framework):
    assert f"```python\n{snippet(framework)}```" in README, f"README's copy of the {framework} example is stale"


@pytest.mark.parametrize("framework", list(SNIPPETS))
def test_the_snippet_runs_as_written(framework, tmp_path, monkeypatch):
    context, space, kwargs = SNIPPETS[framework]
    monkeypatch.chdir(tmp_path)  # the Transformers snippet writes to "out"
    namespace = {**context(), "__name__": f"snippet_{framework}"}
    exec(compile(snippet(framework), f"README:{framework}", "exec"), namespace)
    study = Study(name=framework, workloads=[Workload(train=namespace["train"], train_kwargs=kwargs, eval_every=5,
                                                      name=framework)],
                  search=Search(space=space), directory=str(tmp_path / "study"), mlflow_uri=None)
    (record,) = tune(study, executor=InProcessExecutor).records
    assert record.status is TrialStatus.COMPLETED, record.error
    assert record.steps_planned and record.steps_done == record.steps_planned  # the adapter planned the run
    assert os.path.isdir(record.info["model"]["path"])  # trial.log_model kept the model
