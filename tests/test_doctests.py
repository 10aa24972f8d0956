"""The documentation contract: every public name has a docstring with a runnable example, and
every example in the jaxkeops package runs and prints what its docstring says.

The audit walks `__all__` of jaxkeops and of its application packages; for a class it also
walks the public methods and properties it defines or inherits from jaxkeops classes (mixins,
aliases and the methods attached from the op table included), but not those of JAX, Flax or
Python itself. Data constants (tuples, dicts, strings) need no example.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
from collections.abc import Iterator

import jax
import pytest

import jaxkeops
from jaxkeops.lazy.complex import ComplexLazyTensor
from jaxkeops.lazy.reduction_methods import LazyReduction

# Classes users meet without importing them by name: LazyTensor(z) for a complex z, and what a
# reduction with call=False returns.
_RETURNED_CLASSES = {"ComplexLazyTensor": ComplexLazyTensor, "LazyReduction": LazyReduction}


def _is_project_object(obj: object) -> bool:
    return (getattr(obj, "__module__", None) or "").startswith("jaxkeops")


# The pytree protocol methods are JAX's business, called by jax.tree_util, not by users.
_PROTOCOL_METHODS = frozenset({"tree_flatten", "tree_unflatten"})


def _function_of(attribute: object) -> object | None:
    """The documented callable behind a class attribute (None for data)."""
    if isinstance(attribute, (staticmethod, classmethod)):
        return attribute.__func__
    if isinstance(attribute, property):
        return attribute
    if inspect.isfunction(attribute):
        return attribute
    return None


def _class_members(cls: type) -> Iterator[tuple[str, object]]:
    """(name, function or property) for the public members jaxkeops classes define for cls."""
    seen: set[str] = set()
    for owner in cls.__mro__:
        if not _is_project_object(owner):
            continue
        for name, attribute in vars(owner).items():
            if name.startswith("_") or name in seen or name in _PROTOCOL_METHODS:
                continue
            seen.add(name)
            member = _function_of(attribute)
            if member is not None:
                yield name, member


def _public_objects(module_name: str, names: list[str],
                    extra: dict[str, object] | None = None) -> list[tuple[str, object]]:
    module = importlib.import_module(module_name)
    items = [(f"{module_name}.{name}", getattr(module, name)) for name in names]
    items += [(f"{module_name}.{name}", obj) for name, obj in (extra or {}).items()]
    out = []
    for qualified, obj in items:
        if inspect.isclass(obj):
            out.append((qualified, obj))
            out += [(f"{qualified}.{name}", m) for name, m in _class_members(obj)]
        elif callable(obj):
            out.append((qualified, obj))
    return out


def missing_examples(objects: list[tuple[str, object]]) -> list[str]:
    """The names whose own docstring has no `>>>` example."""
    return [name for name, obj in objects if ">>>" not in (getattr(obj, "__doc__", None) or "")]


def _core_objects() -> list[tuple[str, object]]:
    names = [n for n in jaxkeops.__all__ if n != "__version__"]
    objects = _public_objects("jaxkeops", names, _RETURNED_CLASSES)
    testing = importlib.import_module("jaxkeops.testing")
    objects += _public_objects("jaxkeops.testing", getattr(
        testing, "__all__", [n for n, v in vars(testing).items()
                             if not n.startswith("_") and inspect.isfunction(v)
                             and v.__module__ == "jaxkeops.testing"]))
    return objects


def test_every_core_name_has_an_example():
    objects = _core_objects()
    assert len(objects) > 150, f"the audit found only {len(objects)} names: is it walking?"
    assert missing_examples(objects) == []


@pytest.mark.parametrize("package, optional", [
    ("jaxkeops.ot", None), ("jaxkeops.ops", None), ("jaxkeops.nn", "flax"),
    ("jaxkeops.ott", "ott"),
])
def test_every_application_name_has_an_example(package, optional):
    if optional is not None:
        pytest.importorskip(optional)
    module = importlib.import_module(package)
    objects = _public_objects(package, list(module.__all__))
    assert objects, f"{package} exports nothing documentable"
    assert missing_examples(objects) == []


def test_the_audit_sees_mixins_aliases_and_table_methods():
    names = {name for name, _ in _core_objects()}
    for expected in ["jaxkeops.LazyTensor.sum", "jaxkeops.LazyTensor.grad",
                     "jaxkeops.LazyTensor.kmin", "jaxkeops.LazyTensor.exp",
                     "jaxkeops.LazyTensor.shape", "jaxkeops.ComplexLazyTensor.conj",
                     "jaxkeops.Genred",
                     "jaxkeops.testing.dense_reduce"]:
        assert expected in names
    undocumented = [("f", lambda: None), ("g", property(lambda self: 1, doc="no example"))]
    assert missing_examples(undocumented) == ["f", "g"]


# ---------------------------------------------------------------------------------------------
# The examples themselves, one test per module of the core package. The application packages'
# examples are collected here too, so that a broken example anywhere fails in CI.
def _modules() -> list[str]:
    names = ["jaxkeops"]
    for info in pkgutil.walk_packages(jaxkeops.__path__, prefix="jaxkeops."):
        if info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return sorted(names)


_OPTIONAL_DEPENDENCIES = {"jaxkeops.nn": "flax", "jaxkeops.ott": "ott"}

# Floats print with repr's full precision; examples round or compare with np.allclose, and
# NORMALIZE_WHITESPACE lets array reprs wrap as numpy pleases.
_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("module_name", _modules())
def test_examples_run(module_name):
    for prefix, dependency in _OPTIONAL_DEPENDENCIES.items():
        if module_name == prefix or module_name.startswith(prefix + "."):
            pytest.importorskip(dependency)
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=_FLAGS)
    report: list[str] = []
    # Examples show what users get by default (float32), whatever conftest.py switched on.
    with jax.enable_x64(False):
        for test in finder.find(module, module_name):
            runner.run(test, out=report.append)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, "".join(report)
