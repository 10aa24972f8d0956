"""The application floor (jaxkeops.nn, jaxkeops.ops, jaxkeops.ot) stands on the public API only:
none of its modules imports jaxkeops.primitive, jaxkeops.codegen or jaxkeops.runtime. Flax is an
optional extra: `import jaxkeops` never imports it, and `import jaxkeops.nn` without it says
how to install it."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import jaxkeops

PACKAGE_ROOT = Path(jaxkeops.__file__).parent
APP_PACKAGES = ("nn", "ops", "ot")
FORBIDDEN = ("jaxkeops.primitive", "jaxkeops.codegen", "jaxkeops.runtime")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a module of the jaxkeops package,
    including each name of `from package import name` (it may be a submodule)."""
    package = ".".join(("jaxkeops", *path.relative_to(PACKAGE_ROOT).parent.parts))
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def app_modules() -> list[Path]:
    return sorted(p for name in APP_PACKAGES for p in (PACKAGE_ROOT / name).rglob("*.py"))


def test_the_import_checker_resolves_relative_imports(tmp_path, monkeypatch):
    """The check can fail: a relative import of the primitive is seen as one."""
    fake_root = tmp_path / "jaxkeops"
    (fake_root / "nn").mkdir(parents=True)
    module = fake_root / "nn" / "bad.py"
    module.write_text("from ..primitive import keops_p\nfrom .. import codegen\n"
                      "import jaxkeops.runtime.cache\nfrom jaxkeops import Vi\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_ROOT", fake_root)
    names = [name for _, name in imported_modules(module)]
    assert "jaxkeops.primitive" in names and "jaxkeops.codegen" in names
    assert "jaxkeops.runtime.cache" in names and "jaxkeops.Vi" in names


@pytest.mark.parametrize("path", app_modules(),
                         ids=lambda p: str(p.relative_to(PACKAGE_ROOT)))
def test_app_packages_use_only_the_public_api(path):
    bad = [f"line {line}: {name}" for line, name in imported_modules(path)
           if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, f"{path} imports jaxkeops internals: {bad}"


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300)


def test_import_jaxkeops_does_not_import_flax():
    done = run_python("""
        import sys
        import jaxkeops
        print("flax" in sys.modules)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_import_nn_without_flax_says_how_to_install_it():
    done = run_python("""
        import sys
        sys.modules["flax"] = None  # as if Flax were not installed
        try:
            import jaxkeops.nn
        except ImportError as error:
            print(error)
        else:
            print("imported")
    """)
    assert done.returncode == 0, done.stderr
    assert 'pip install "jaxkeops[flax]"' in done.stdout, done.stdout


def public_callables_of_nn() -> list[tuple[str, object]]:
    """(qualified name, object) of every name in jaxkeops.nn.__all__ that is a class or a
    function, and of every public method a class defines itself."""
    nn = pytest.importorskip("jaxkeops.nn")
    found = []
    for name in nn.__all__:
        item = getattr(nn, name)
        if inspect.isclass(item) or inspect.isfunction(item):
            found.append((name, item))
        if inspect.isclass(item):
            found += [(f"{name}.{method}", member) for method, member in vars(item).items()
                      if inspect.isfunction(member) and not method.startswith("_")]
            found.append((f"{name}.__call__", item.__call__))
    return found


def test_every_public_callable_of_nn_has_a_docstring_example():
    """Every public class, function and method of jaxkeops.nn documents itself with a `>>>`
    example (they run in tests/test_nn_attention.py, test_nn_pointconv.py and
    test_nn_sinkhorn.py, and under `pytest --doctest-modules jaxkeops/nn`)."""
    found = public_callables_of_nn()
    assert {"KernelAttention.__call__", "PointConv.mlp", "SinkhornLoss", "knn_indices"} <= {
        name for name, _ in found}
    missing = [name for name, item in found if ">>>" not in (inspect.getdoc(item) or "")]
    assert not missing, f"no docstring example in: {missing}"
