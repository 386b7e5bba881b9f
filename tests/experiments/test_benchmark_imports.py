"""The benchmark scripts import the package only inside their functions, so nothing else would
notice a name they use being moved: every `from helpsteer_jax... import name` in them, at any
depth, must resolve."""

import ast
import importlib
import pathlib

import pytest

BENCHMARKS = sorted((pathlib.Path(__file__).resolve().parents[2] / "experiments" / "benchmarks").glob("*.py"))


def _package_imports(path: pathlib.Path) -> list[tuple[str, str]]:
  pairs = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("helpsteer_jax"):
      pairs.extend((node.module, alias.name) for alias in node.names)
    elif isinstance(node, ast.Import):
      pairs.extend((alias.name, "") for alias in node.names if alias.name.startswith("helpsteer_jax"))
  return pairs


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_every_package_name_a_benchmark_imports_exists(path):
  for module_name, name in _package_imports(path):
    module = importlib.import_module(module_name)
    if name and not hasattr(module, name):
      importlib.import_module(f"{module_name}.{name}")  # a submodule; raises if it is not one


def test_the_benchmarks_are_found():
  assert len(BENCHMARKS) >= 5 and all(
    _package_imports(p) for p in BENCHMARKS if p.name not in ("timing.py", "compare_revisions.py")
  )
