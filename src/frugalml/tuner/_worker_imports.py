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
import os
import site
import sys
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Iterator

from frugalml.tuner._train_source import find_spec_without_importing, module_source, parse_source

#: top-level packages whose import starts no thread and opens no device (checked on CPython 3.11:
#: torch 2, Lightning 2, transformers 4, XGBoost, LightGBM, scikit-learn, pandas, SciPy; Keras 3
#: on the torch backend, which the forkserver checks for itself: :mod:`frugalml._preload`)
FRAMEWORKS = frozenset({"torch", "torchvision", "lightning", "pytorch_lightning", "transformers", "xgboost",
                        "lightgbm", "keras"})
SCIENTIFIC = frozenset({"numpy", "pandas", "scipy", "sklearn"})  # any of their modules: computation only
NOT_FOLLOWED = FRAMEWORKS | SCIENTIFIC | {"frugalml"}  # installed: what they import is not the user's
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
        names, chooses_keras_backend = _reachable_imports(train)
    except Exception:  # noqa: BLE001 - a source this reading does not handle preloads nothing
        return ()
    if chooses_keras_backend:  # a module read sets KERAS_BACKEND itself: Keras is left to the worker
        names = [n for n in names if _root(n) != "keras"]
    return _chosen(names)


def _root(name: str) -> str:
    """The library ``name`` belongs to (an adapter's: its framework)."""
    return ADAPTERS.get(name) or name.partition(".")[0]


def _chosen(names: list[str]) -> tuple[str, ...]:
    chosen: list[str] = []
    for name in names:
        root = _root(name)
        if root in SCIENTIFIC or name in ADAPTERS:
            chosen.append(name)
        elif root in FRAMEWORKS:
            chosen.append(root)
    roots = {_root(name) for name in chosen}
    if roots & TORCH_TRAINING or ("keras" in roots and importlib.util.find_spec("torch") is not None):
        chosen.append(TORCH_OPTIMISERS)
    return tuple(dict.fromkeys(chosen))


def _reachable_imports(train: Any) -> tuple[list[str], bool]:
    """The modules ``train`` may import, and whether a module read sets ``KERAS_BACKEND``."""
    while isinstance(train, functools.partial):
        train = train.func
    if isinstance(train, str):
        module_name, _, name = train.partition(":")
        parsed = module_source(module_name) if module_name else None
        tree = None if parsed is None else parsed[1]
    else:
        train = inspect.unwrap(train)
        module_name, name = getattr(train, "__module__", None) or "", getattr(train, "__name__", None)
        path = getattr(sys.modules.get(module_name), "__file__", None) or ""
        parsed = parse_source(path) if path.endswith(".py") else None
        tree = None if parsed is None else parsed[1]
        if tree is None:  # a notebook's function: the modules its globals hold
            return [value.__name__ for value in getattr(train, "__globals__", {}).values()
                    if isinstance(value, ModuleType)], False
    if tree is None:
        return [], False
    package = module_name.rpartition(".")[0]  # its packages' __init__ run too ("" for a top-level module)
    follower = _OwnModules()
    names = follower.follow([(package, ()), *_imported(tree, name, package)])
    return names, follower.chooses_keras_backend or _sets_keras_backend(tree)


class _OwnModules:
    """Follows the user's own modules (not installed: outside site-packages and the standard
    library) to what they and their packages import at their top level, transitively: importing
    one runs those imports in the worker too. At most OWN_MODULES_READ files are read."""

    def __init__(self) -> None:
        self.installed = tuple({str(Path(path).resolve()) for path in (
            *(sysconfig.get_paths().get(key) for key in ("purelib", "platlib", "stdlib", "platstdlib")),
            *site.getsitepackages(), site.getusersitepackages()) if path})
        self.found: list[str] = []
        self.looked_up: set[str] = set()
        self.files_read = 0
        self.chooses_keras_backend = False

    def follow(self, imports: Iterable[tuple[str, tuple[str, ...]]]) -> list[str]:
        for module, names in imports:
            self._visit(module, names)
        return self.found

    def _visit(self, name: str, from_names: tuple[str, ...] = ()) -> None:
        if name:
            self.found.append(name)
        if not name or name.partition(".")[0] in NOT_FOLLOWED:
            return
        parts = name.split(".")
        for module in (".".join(parts[: i + 1]) for i in range(len(parts))):  # a package's __init__ runs too
            self._read(module)
        for submodule in (f"{name}.{n}" for n in from_names):  # ``from package import module``
            if self._own_file(submodule) is not None:
                self._visit(submodule)

    def _read(self, module: str) -> None:
        if module in self.looked_up or self.files_read >= OWN_MODULES_READ:
            return
        self.looked_up.add(module)
        try:
            origin = self._own_file(module)
            if origin is None:
                return
            self.files_read += 1
            parsed = parse_source(origin)
            if parsed is None:
                return
            tree = parsed[1]
            self.chooses_keras_backend |= _sets_keras_backend(tree)
            package = module if Path(origin).name == "__init__.py" else module.rpartition(".")[0]
            imports = list(_imports_in(tree.body, package))
        except Exception:  # noqa: BLE001 - what was found so far stands (a file too deep to parse, an odd finder)
            return
        for imported, names in imports:
            self._visit(imported, names)

    def _own_file(self, module: str) -> str | None:
        """The path of ``module``'s source when it is the user's own, else None."""
        try:
            origin = getattr(find_spec_without_importing(module), "origin", None)
        except Exception:  # noqa: BLE001 - not found without importing: not followed
            return None
        if not origin or not origin.endswith(".py"):
            return None
        resolved = str(Path(origin).resolve())
        parts = Path(resolved).parts
        if "site-packages" in parts or "dist-packages" in parts or resolved.startswith(
                tuple(path + os.sep for path in self.installed)):
            return None
        return origin


def _sets_keras_backend(tree: ast.Module) -> bool:
    return any(isinstance(node, ast.Constant) and node.value == "KERAS_BACKEND" for node in ast.walk(tree))


def _imported(tree: ast.Module, function: str | None, package: str) -> Iterator[tuple[str, tuple[str, ...]]]:
    """What is imported at the top level, by ``function`` and by the module's functions it calls
    (by name, transitively): (absolute module name, the names a ``from`` import takes from it)."""
    functions = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    yield from _imports_in(tree.body, package)
    pending, seen = [function], set()
    while pending:
        node = functions.get(pending.pop() or "")
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        yield from _imports_in(node.body, package)
        pending += [call.func.id for call in ast.walk(node)
                    if isinstance(call, ast.Call) and isinstance(call.func, ast.Name)]


def _imports_in(statements: list[ast.stmt], package: str) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Imports run by ``statements``, not entering function or class bodies; an ``if`` only when it
    can run in a worker, a ``try`` without its ``except`` fallbacks. Relative ones are resolved
    against ``package``."""
    for node in statements:
        if isinstance(node, ast.Import):
            yield from ((alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                yield node.module, tuple(alias.name for alias in node.names)
            elif node.level and package:
                try:
                    base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                except (ImportError, ValueError):
                    continue
                yield base, tuple(alias.name for alias in node.names)
        elif isinstance(node, ast.If):
            if not _never_in_a_worker(node.test):
                yield from _imports_in(node.body, package)
                yield from _imports_in(node.orelse, package)
        elif isinstance(node, ast.Try):
            yield from _imports_in([*node.body, *node.orelse, *node.finalbody], package)
        elif isinstance(node, (ast.With, ast.For, ast.While)):
            yield from _imports_in([*node.body, *getattr(node, "orelse", [])], package)


def _never_in_a_worker(test: ast.expr) -> bool:
    """``if TYPE_CHECKING`` (or ``typing.TYPE_CHECKING``), ``if __name__ == "__main__"``."""
    if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
        return True
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators))
