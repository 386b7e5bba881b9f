"""The package's layers import only downwards (models/parallel/formats < checkpoints < data <
sampling/scoring < scaling/train < eval < entry points < testing): a regression guard that walks every import,
those inside functions included."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "helpsteer_jax"

# Layer of each subpackage; top-level modules are entry points unless listed.
LAYERS = {
  "formats": 0,
  "models": 0,
  "parallel": 0,
  "storage": 0,
  "remote": 0,
  "checkpoints": 1,
  "data": 2,
  "sampling": 3,
  "scoring": 3,
  "scaling": 4,
  "train": 4,
  "eval": 5,
  "testing": 7,  # the tests' helpers: above everything, imported by nothing in the package
}
ENTRY = 6
# Modules below the entry points that live at the top level.
TOP_LEVEL = {"entry_point": 0, "config_args": 0, "compilation_cache": 0}


def layer_of(module: str) -> int:
  parts = module.split(".")
  assert parts[0] == "helpsteer_jax", module
  if len(parts) == 1:
    return ENTRY  # the package's lazy re-exports
  if parts[1] in LAYERS:
    if parts[1] == "train" and parts[-1] == "__main__":
      return ENTRY
    return LAYERS[parts[1]]
  return TOP_LEVEL.get(parts[1], ENTRY)


def module_name(path: pathlib.Path) -> str:
  rel = path.relative_to(PACKAGE.parent).with_suffix("")
  parts = list(rel.parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def imports(path: pathlib.Path) -> list[tuple[str, int]]:
  out = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out += [(a.name, node.lineno) for a in node.names if a.name.startswith("helpsteer_jax")]
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("helpsteer_jax"):
      if node.module == "helpsteer_jax":  # `from helpsteer_jax import x`: the submodule x
        out += [(f"helpsteer_jax.{a.name}", node.lineno) for a in node.names]
      else:
        out.append((node.module, node.lineno))
  return out


def test_no_module_imports_a_higher_layer():
  violations = []
  files = sorted(PACKAGE.rglob("*.py"))
  assert len(files) > 50
  for path in files:
    name = module_name(path)
    own = layer_of(name)
    for target, line in imports(path):
      if layer_of(target) > own:
        violations.append(
          f"{path.relative_to(PACKAGE.parent)}:{line}: {name} (layer {own}) imports {target} (layer {layer_of(target)})"
        )
  assert not violations, "\n".join(violations)


def test_shared_types_are_defined_once():
  definitions = []
  for path in sorted(PACKAGE.rglob("*.py")):
    for node in ast.parse(path.read_text()).body:
      targets = node.targets if isinstance(node, ast.Assign) else []
      names = {t.id for t in targets if isinstance(t, ast.Name)}
      if isinstance(node, ast.ClassDef):
        names = {node.name}
      for name in names & {"Message", "Conversation", "PromptItem"}:
        definitions.append((name, str(path.relative_to(PACKAGE))))
  assert sorted(definitions) == [
    ("Conversation", "formats/messages.py"),
    ("Message", "formats/messages.py"),
    ("PromptItem", "data/prompt_sources.py"),
  ], definitions


def test_no_import_cycles_between_modules():
  """Cycles hidden by imports inside functions count too (they tie two modules into one)."""
  modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
  graph = {}
  for name, path in modules.items():
    targets = set()
    for target, _ in imports(path):
      parent = target.rsplit(".", 1)[0]
      # `from helpsteer_jax.x import y` names the module x.y, or the name y of module x.
      targets.add(target if target in modules or parent not in modules else parent)
    graph[name] = {t for t in targets if t in modules and t not in (name, "helpsteer_jax")}
  state: dict[str, int] = {}
  cycles = []

  def visit(node, stack):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 1:
        cycles.append(stack[stack.index(nxt) :] + [nxt])
      elif nxt not in state:
        visit(nxt, stack)
    stack.pop()
    state[node] = 2

  for node in sorted(graph):
    if node not in state:
      visit(node, [])
  assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_imports_inside_functions_defer_a_slow_library():
  """An import sits inside a function only where it keeps a slow library (import_times.py measures
  them) out of its module's start-up; any other import belongs at the top of the module."""
  from helpsteer_jax.testing.import_audit import function_level_imports

  rows = function_level_imports(PACKAGE)
  assert len(rows) > 20  # the entry points' --help and the config modules never import jax
  needless = [f"{r.module}:{r.line} ({r.function}) imports {r.targets[0]}" for r in rows if not r.deferred]
  assert not needless, "move these to the top of their modules:\n" + "\n".join(needless)
