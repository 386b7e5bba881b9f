"""Which imports inside functions keep a slow library out of a module's start-up.

An import is placed inside a function only to defer a library whose import costs measurable time
(experiments/benchmarks/import_times.py measures each: jax about a second, transformers several)
and that the module's own top-level imports do not already load. `function_level_imports` reads
the package statically: for each import inside a function, the slow libraries it adds to what the
module's top level already imports (its closure over the package's top-level imports).
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib

# Third-party libraries slow enough to defer: each takes 0.3 s or more to import on a 2-core CPU
# (import_times.py). Everything else (the standard library, numpy, absl, ml_collections, tqdm,
# and etils.epath, fsspec, gguf, tokenizers, pyarrow, huggingface_hub at under 0.1 s each) is
# imported at the top of a module.
SLOW_LIBRARIES = frozenset(
  {
    "jax",
    "flax",
    "optax",
    "orbax",
    "tensorstore",
    "transformers",
    "torch",
    "datasets",
    "matplotlib",
    "tensorboardX",
    "gcsfs",
  }
)


@dataclasses.dataclass(frozen=True)
class FunctionImport:
  module: str
  function: str
  line: int
  targets: tuple[str, ...]
  deferred: tuple[str, ...]  # the slow libraries it keeps out of the module's top-level closure


def _module_name(package: pathlib.Path, path: pathlib.Path) -> str:
  parts = list(path.relative_to(package.parent).with_suffix("").parts)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
  """The modules an import statement may load (`from a import b`: a, and a.b if b is a module)."""
  if isinstance(node, ast.Import):
    return [a.name for a in node.names]
  base = node.module or ""
  if node.level:
    parts = module.split(".") if is_package else module.split(".")[:-1]
    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
  return [base] + [f"{base}.{a.name}" for a in node.names]


def _is_type_checking(node: ast.AST) -> bool:
  return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def function_level_imports(package: pathlib.Path) -> list[FunctionImport]:
  files = {_module_name(package, p): p for p in sorted(package.rglob("*.py"))}
  top: dict[str, set[str]] = {}
  inner: list[tuple[str, str, int, list[str]]] = []
  for module, path in files.items():
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def top_level(body: list[ast.stmt]) -> None:
      for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
          found.update(_targets(node, module, is_package))
        elif isinstance(node, ast.Try):
          top_level(node.body)
        elif isinstance(node, ast.If) and not _is_type_checking(node):
          top_level(node.body)
          top_level(node.orelse)

    top_level(tree.body)
    top[module] = found
    for fn in ast.walk(tree):
      if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        for node in ast.walk(fn):
          if isinstance(node, (ast.Import, ast.ImportFrom)):
            inner.append((module, fn.name, node.lineno, _targets(node, module, is_package)))

  def closure(modules: list[str]) -> set[str]:
    seen: set[str] = set()
    stack = list(modules)
    while stack:
      name = stack.pop()
      if name in seen:
        continue
      seen.add(name)
      stack.extend(top.get(name, ()))
      parts = name.split(".")
      stack.extend(".".join(parts[:i]) for i in range(1, len(parts)))
    return seen

  out = {}
  for module, function, line, targets in inner:
    added = closure(targets) - closure([module])
    deferred = tuple(sorted({name.split(".")[0] for name in added} & SLOW_LIBRARIES))
    # a function nested in another is walked twice: keep one row per statement
    out[(module, line)] = FunctionImport(module, function, line, tuple(targets), deferred)
  return sorted(out.values(), key=lambda r: (r.module, r.line))
