"""Which libraries a user's training function imports, read from its module's source: the
trial workers' forkserver imports them once (:func:`frugalml.executors.preload`), so that each
trial does not. Importing Lightning costs a fresh process ~8 CPU-s, Keras on torch ~7, torch ~3.

What the function can reach is read: the module's top-level imports (not those under ``if
TYPE_CHECKING`` or ``if __name__ == "__main__"``, nor an ``except`` fallback), the imports in
the function's body and in the bodies of the module's functions it calls, and the top-level
imports of the user's own modules (not installed ones) that those import, transitively. Only libraries known
to start no thread and open no device when imported are named (a thread in the forkserver
would be lost in every forked worker, and CUDA cannot be used after a fork); of the large
frameworks, only the top-level package, whose submodules (a Dask or Spark integration,
TensorBoard) are not checked. The user's module itself is never imported there: its top-level
code runs in each worker, as before. A library preloaded and not used would cost each worker
its memory (inherited heap counts in RSS - shared), so nothing is guessed.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import sys
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

from frugalml.tuner._train_source import find_spec_without_importing, module_source

#: top-level packages whose import starts no thread and opens no device (checked on CPython 3.11:
#: torch 2, Lightning 2, transformers 4, XGBoost, LightGBM, scikit-learn, pandas, SciPy; Keras 3
#: on the torch backend, which the forkserver checks for itself: :mod:`frugalml.executors._preload`)
FRAMEWORKS = frozenset({"torch", "torchvision", "lightning", "pytorch_lightning", "transformers", "xgboost",
                        "lightgbm", "keras"})
SCIENTIFIC = frozenset({"numpy", "pandas", "scipy", "sklearn"})  # any of their modules: computation only
TORCH_TRAINING = frozenset({"torch", "lightning", "pytorch_lightning"})
OWN_MODULES_READ = 50  # of a project's own modules, read for their imports, at most
TORCH_OPTIMISERS = "torch._dynamo"  # what torch's optimisers import on their first step (1.5 CPU-s)
#: frugalml's adapters import their framework when imported (the Keras one chooses the torch backend first)
ADAPTERS = {f"frugalml.integrations.{name}": name
            for name in ("torch", "lightning", "transformers", "keras", "xgboost", "lightgbm", "sklearn")}


def worker_imports(train: Any) -> tuple[str, ...]:
    """The modules to preload for workers that run ``train`` (``"module:function"`` or a callable),
    in the order the source imports them; empty when the source cannot be read. Never raises:
    it is only a saving."""
    try:
        names, tree = _reachable_imports(train)
    except Exception:  # noqa: BLE001 - a source this reading does not handle preloads nothing
        return ()
    if tree is not None and any(isinstance(node, ast.Constant) and node.value == "KERAS_BACKEND"
                                for node in ast.walk(tree)):
        names = [n for n in names if (ADAPTERS.get(n) or n.partition(".")[0]) != "keras"]  # it chooses, in the worker
    return _chosen(names)


def _chosen(names: list[str]) -> tuple[str, ...]:
    chosen: list[str] = []
    for name in names:
        root = ADAPTERS.get(name) or name.partition(".")[0]
        if root in SCIENTIFIC or name in ADAPTERS:
            chosen.append(name)
        elif root in FRAMEWORKS:
            chosen.append(root)
    roots = {ADAPTERS.get(name) or name.partition(".")[0] for name in chosen}
    if roots & TORCH_TRAINING or ("keras" in roots and importlib.util.find_spec("torch") is not None):
        chosen.append(TORCH_OPTIMISERS)
    return tuple(dict.fromkeys(chosen))


def _reachable_imports(train: Any) -> tuple[list[str], ast.Module | None]:
    """The modules ``train`` may import, and its module's tree where it was read."""
    while isinstance(train, functools.partial):
        train = train.func
    if isinstance(train, str):
        module_name, _, name = train.partition(":")
        parsed = module_source(module_name) if module_name else None
        tree = None if parsed is None else parsed[1]
    else:
        train = inspect.unwrap(train)
        name = getattr(train, "__name__", None)
        tree = _tree_of(sys.modules.get(getattr(train, "__module__", None) or ""))
        if tree is None:  # a notebook's function: the modules its globals hold
            return [value.__name__ for value in getattr(train, "__globals__", {}).values()
                    if isinstance(value, ModuleType)], None
    return ([] if tree is None else _with_own_modules(list(_imported(tree, name)))), tree


def _with_own_modules(names: list[str]) -> list[str]:
    """``names``, each of the user's own modules among them (not installed: outside site-packages
    and the standard library) followed by what it and its packages import at their top level,
    transitively: importing it runs those imports in the worker too."""
    installed = tuple(str(Path(path).resolve()) for key in ("purelib", "platlib", "stdlib", "platstdlib")
                      if (path := sysconfig.get_paths().get(key)))
    found: list[str] = []
    read: set[str] = set()

    def visit(name: str) -> None:
        found.append(name)
        parts = name.split(".")
        for module in (".".join(parts[: i + 1]) for i in range(len(parts))):  # a package's __init__ runs too
            if parts[0] in FRAMEWORKS | SCIENTIFIC | {"frugalml"} or module in read or len(read) >= OWN_MODULES_READ:
                return
            read.add(module)
            spec = find_spec_without_importing(module)
            origin = getattr(spec, "origin", None)
            if not origin or not origin.endswith(".py") or str(Path(origin).resolve()).startswith(installed):
                continue
            try:
                tree = ast.parse(importlib.util.decode_source(Path(origin).read_bytes()), filename=origin)
            except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
                continue
            for imported in _imports_in(tree.body):
                visit(imported)

    for name in names:
        visit(name)
    return found


def _tree_of(module: ModuleType | None) -> ast.Module | None:
    path = getattr(module, "__file__", None)
    if not path or not path.endswith(".py"):
        return None
    try:
        return ast.parse(importlib.util.decode_source(Path(path).read_bytes()), filename=path)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None


def _imported(tree: ast.Module, function: str | None) -> Iterator[str]:
    """The absolute module names imported at the top level, by ``function`` and by the module's
    functions it calls (by name, transitively)."""
    functions = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    yield from _imports_in(tree.body)
    pending, seen = [function], set()
    while pending:
        node = functions.get(pending.pop() or "")
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        yield from _imports_in(node.body)
        pending += [call.func.id for call in ast.walk(node)
                    if isinstance(call, ast.Call) and isinstance(call.func, ast.Name)]


def _imports_in(statements: list[ast.stmt]) -> Iterator[str]:
    """Imports run by ``statements``, not entering function or class bodies; an ``if`` only when it
    can run in a worker, a ``try`` without its ``except`` fallbacks."""
    for node in statements:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
        elif isinstance(node, ast.If):
            if not _never_in_a_worker(node.test):
                yield from _imports_in(node.body)
                yield from _imports_in(node.orelse)
        elif isinstance(node, ast.Try):
            yield from _imports_in([*node.body, *node.orelse, *node.finalbody])
        elif isinstance(node, (ast.With, ast.For, ast.While)):
            yield from _imports_in([*node.body, *getattr(node, "orelse", [])])


def _never_in_a_worker(test: ast.expr) -> bool:
    """``if TYPE_CHECKING`` (or ``typing.TYPE_CHECKING``), ``if __name__ == "__main__"``."""
    if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
        return True
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators))
