"""The import rules of the README's architecture section, checked on the source itself
(an AST walk, so a lazy import inside a function counts as much as one at the top).

- `service` and `models.generation` never import torch, torchvision or `training`, not
  even through a module they import at load time;
- `models` never imports `training` or `service`;
- no import cycles between the project's modules at load time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "training", "service")
TORCH = ("torch", "torchvision", "torchmetrics")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(every module imported anywhere in the file, those imported at load time)."""
    module = _module_name(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    everywhere: set[str] = set()
    at_load: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node, path.name == "__init__.py")
            names = [target] + [f"{target}.{alias.name}" for alias in node.names]
        guarded = isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for name in names:
            everywhere.add(name)
            if not in_function:
                at_load.add(name)
        for child in ast.iter_child_nodes(node):
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, in_function or nested or guarded)

    visit(tree, False)
    return everywhere, at_load


def _graph() -> dict[str, tuple[set[str], set[str]]]:
    return {_module_name(p): _imports(p) for package in PACKAGES
            for p in sorted((ROOT / package).rglob("*.py"))}


GRAPH = _graph()


def _project(name: str) -> str | None:
    """The project module `name` refers to (a module, or the package holding a name)."""
    while name:
        if name in GRAPH:
            return name
        name = name.rpartition(".")[0]
    return None


def _loaded_with(module: str) -> set[str]:
    """Every module (ours and third-party) that importing `module` imports."""
    seen, todo, found = set(), [module], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in GRAPH[current][1]:
            found.add(name)
            ours = _project(name)
            if ours:
                todo.append(ours)
                parts = ours.split(".")  # importing a.b.c runs a/__init__ and a/b/__init__ too
                todo.extend(".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in GRAPH)
    return found


def _top(name: str) -> str:
    return name.split(".")[0]


def test_the_graph_covers_the_torch_free_layers():
    assert any(m.startswith("service.") for m in GRAPH)
    assert "models.latent" in GRAPH and "training.loop" in GRAPH


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.split(".")[0] == "service"
                                          or m.startswith("models.generation")))
def test_serving_side_never_imports_torch_or_training(module):
    direct = {_top(n) for n in GRAPH[module][0]}
    assert not direct & {*TORCH, "training"}, f"{module} imports {sorted(direct & {*TORCH, 'training'})}"
    loaded = {_top(n) for n in _loaded_with(module)}
    assert not loaded & {*TORCH, "training"}, f"importing {module} loads {sorted(loaded & {*TORCH, 'training'})}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if _top(m) == "models"))
def test_models_never_import_training_or_service(module):
    direct = {_top(n) for n in GRAPH[module][0]}
    assert not direct & {"training", "service"}, f"{module} imports {sorted(direct & {'training', 'service'})}"


@pytest.mark.parametrize("module, forbidden", [
    ("service.service", ("torch", "torchvision", "training")),
    # Pillow and BentoML too: the layer loads them only when a GIF or the store is needed.
    ("models.generation", ("torch", "training", "service", "PIL", "bentoml")),
])
def test_importing_a_torch_free_layer_loads_none_of_the_forbidden_modules(module, forbidden):
    """The same rule, at run time: what `import` really loads, in a fresh interpreter."""
    code = (f"import sys, {module}; "
            f"bad = [m for m in {forbidden!r} if m in sys.modules]; assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_no_import_cycles_at_load_time():
    edges = {m: {o for n in GRAPH[m][1] if (o := _project(n)) and o != m} for m in GRAPH}
    state: dict[str, int] = {}

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            walk(module, [module])


def test_the_rules_catch_a_violation(tmp_path):
    """The walker sees lazy imports and relative ones (so the rules above can fail)."""
    source = tmp_path / "service" / "bad.py"
    source.parent.mkdir()
    source.write_text("def f():\n    import torch\nfrom ..training import loop\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        everywhere, at_load = _imports(source)
    finally:
        ROOT = saved
    assert "torch" in everywhere and "torch" not in at_load
    assert "training.loop" in at_load
