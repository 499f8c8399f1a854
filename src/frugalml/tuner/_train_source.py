"""Checking a ``"module:function"`` training function from its source, without importing it.

The driver never calls the training function; each worker imports it. Importing it in the
driver only to check it cost the driver the user's framework before the first trial could
start (a Keras module on the torch backend: ~9 CPU-s). So a plain top-level ``def`` in a
Python source file is checked from the module's syntax tree. What the tree cannot settle (a
decorator, a name bound twice or by an import or an assignment, a star import, a compiled
module, a syntax error, a dependency that is not installed) is left to an import, as before.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from typing import Any, Mapping

NOT_TRAINING_ARGUMENTS = "its arguments do not fit (trial, **train_kwargs)"
IS_A_CLASS = "it is a class"


@dataclass(frozen=True)
class SourceVerdict:
    """What the source says about a training function: ``problem`` None when it takes
    (trial, **train_kwargs), else why it is not a training function; ``source``: its module's text."""

    problem: str | None
    source: str


def source_verdict(train: str, train_kwargs: Mapping[str, Any]) -> SourceVerdict | None:
    """The verdict on ``train`` from its module's source, or None when only importing it can tell."""
    module_name, _, attribute = train.partition(":")
    if not module_name or not attribute.isidentifier() or (parsed := module_source(module_name)) is None:
        return None
    source, tree = parsed
    if not _dependencies_found(tree):
        return None  # importing names the missing one, before the study writes anything
    try:
        node = _only_binding(tree, attribute)
    except RecursionError:
        return None
    if node is None or node.decorator_list:
        return None
    if isinstance(node, ast.ClassDef):
        return SourceVerdict(IS_A_CLASS, source)
    try:
        _signature(node.args).bind(object(), **train_kwargs)
    except TypeError:
        return SourceVerdict(NOT_TRAINING_ARGUMENTS, source)
    return SourceVerdict(None, source)


def module_source(module_name: str) -> tuple[str, ast.Module] | None:
    """The text and syntax tree of a pure-Python module, found without importing it or its
    parent packages; else None."""
    try:
        spec = find_spec_without_importing(module_name)
    except Exception:  # noqa: BLE001 - the import then raises it, as before
        return None
    if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader) or not spec.origin:
        return None
    return parse_source(spec.origin)


def parse_source(path: str) -> tuple[str, ast.Module] | None:
    """The text (in its declared encoding) and syntax tree of the Python file at ``path``; else None."""
    try:
        with open(path, "rb") as file:
            source = importlib.util.decode_source(file.read())
        return source, ast.parse(source, filename=path)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None


def find_spec_without_importing(module_name: str) -> importlib.machinery.ModuleSpec | None:
    """``importlib.util.find_spec`` without running a parent package's ``__init__``: each part
    is looked up by the import system's finders in the folders of the part before."""
    spec, path = None, None
    parts = module_name.split(".")
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        if i and path is None:
            return None  # a module, not a package: it has no submodules
        module = sys.modules.get(name)
        if module is not None:
            spec = getattr(module, "__spec__", None)
        else:
            spec = next((found for finder in sys.meta_path if hasattr(finder, "find_spec")
                         and (found := finder.find_spec(name, path)) is not None), None)
        if spec is None:
            return None
        path = spec.submodule_search_locations
    return spec


def _dependencies_found(tree: ast.Module) -> bool:
    """Whether every package the module imports unconditionally (a top-level ``import``, not one
    inside ``try`` or ``if``) is installed. A module that fails to import for another reason is
    left to its first trial, which stops the study with the same one-line error."""
    packages = {alias.name.partition(".")[0] for node in tree.body if isinstance(node, ast.Import)
                for alias in node.names}
    packages |= {node.module.partition(".")[0] for node in tree.body
                 if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module}
    try:
        return all(importlib.util.find_spec(package) is not None for package in packages)
    except Exception:  # noqa: BLE001 - a spec that cannot be looked up: let the import tell
        return False


def _only_binding(tree: ast.Module, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | None:
    """The top-level ``def`` or ``class`` that is the module's one binding of ``name``, else None
    (bound elsewhere too, by anything, or maybe bound in a way the tree does not show)."""
    found: list[ast.AST] = []
    unsure = False

    class Bindings(ast.NodeVisitor):
        def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
            if node.name == name:
                found.append(node)
            if node.name == "__getattr__":  # a module-level __getattr__ may answer any name
                nonlocal unsure
                unsure = True
            arguments = getattr(node, "args", None)
            evaluated_here = (*node.decorator_list, *getattr(node, "bases", ()), *getattr(node, "keywords", ()),
                              *(arguments.defaults if arguments else ()),
                              *(d for d in (arguments.kw_defaults if arguments else ()) if d is not None))
            for child in evaluated_here:
                self.visit(child)  # the body is another scope; what it binds is not the module's

        visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

        def visit_Lambda(self, node: ast.Lambda) -> None:
            pass

        def visit_Name(self, node: ast.Name) -> None:
            if node.id == name and not isinstance(node.ctx, ast.Load):
                found.append(node)

        def visit_alias(self, node: ast.alias) -> None:
            nonlocal unsure
            if node.name == "*" or (node.asname or node.name.partition(".")[0]) == name:
                unsure = True

        def visit_ExceptHandler(self, node: ast.AST) -> None:  # and the match patterns: names as plain strings
            nonlocal unsure
            if name in (getattr(node, "name", None), getattr(node, "rest", None)):
                unsure = True
            self.generic_visit(node)

        visit_MatchAs = visit_MatchStar = visit_MatchMapping = visit_ExceptHandler

    Bindings().visit(tree)
    for node in ast.walk(tree):  # anywhere: a function may declare the name global, or rebind the module's names
        if isinstance(node, (ast.Global, ast.Nonlocal)) and name in node.names:
            unsure = True
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                "globals", "vars", "exec", "setattr", "__import__"):
            unsure = True
    if unsure or len(found) != 1 or found[0] not in tree.body:
        return None
    return found[0] if isinstance(found[0], (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else None


def _signature(arguments: ast.arguments) -> inspect.Signature:
    """The signature of a ``def`` with ``arguments``, each default a placeholder (no user code runs):
    what :meth:`inspect.Signature.bind` checks the call against."""
    P = inspect.Parameter
    positional = [*arguments.posonlyargs, *arguments.args]
    defaulted = len(positional) - len(arguments.defaults)
    parameters = [P(a.arg, P.POSITIONAL_ONLY if i < len(arguments.posonlyargs) else P.POSITIONAL_OR_KEYWORD,
                    default=None if i >= defaulted else P.empty) for i, a in enumerate(positional)]
    if arguments.vararg:
        parameters.append(P(arguments.vararg.arg, P.VAR_POSITIONAL))
    parameters += [P(a.arg, P.KEYWORD_ONLY, default=P.empty if d is None else None)
                   for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults)]
    if arguments.kwarg:
        parameters.append(P(arguments.kwarg.arg, P.VAR_KEYWORD))
    return inspect.Signature(parameters)
