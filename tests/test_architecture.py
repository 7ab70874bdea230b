"""The architecture's rules, checked on the code itself (docs/ARCHITECTURE.md):

- imports run one way: dashboard -> core -> nn, and nn imports nothing of core or dashboard
  (the models see the rest of Tickwise only through nn/contract.py);
- no import cycle between modules (so none between packages either);
- no product file over 400 lines, no class over 250, no function over 50.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "nn", "dashboard")
MAX_FILE, MAX_CLASS, MAX_FUNCTION = 400, 250, 50


def product_files() -> list[Path]:
    files = [ROOT / "app.py"]
    for package in PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports(path: Path, known: set[str]) -> set[str]:
    """The product modules ``path`` imports (anywhere in it, lazily too), TYPE_CHECKING aside."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in product_files()}
    known = set(files)
    return {name: imports(path, known) - {name} for name, path in files.items()}


def test_nn_imports_nothing_from_core_or_the_dashboard():
    bad = {m: sorted(d for d in deps if d.split(".")[0] in ("core", "dashboard", "app"))
           for m, deps in graph().items() if m.startswith("nn")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_core_never_imports_the_dashboard():
    bad = {m: sorted(d for d in deps if d.split(".")[0] in ("dashboard", "app"))
           for m, deps in graph().items() if m.startswith("core")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_no_import_cycles_between_modules():
    g = graph()
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(g.get(node, ())):
            if dep.startswith(node + ".") or node.startswith(dep + "."):
                continue  # a package and its own modules (the __init__ hands names on)
            if state.get(dep) == "open":
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for module in sorted(g):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_no_file_class_or_function_too_long():
    too_long = []
    for path in product_files():
        text = path.read_text()
        rel = path.relative_to(ROOT)
        if len(text.splitlines()) > MAX_FILE:
            too_long.append(f"{rel}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            n = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, ast.ClassDef) and n > MAX_CLASS:
                too_long.append(f"{rel}:{node.lineno} class {node.name}: {n} lines")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and n > MAX_FUNCTION:
                too_long.append(f"{rel}:{node.lineno} {node.name}(): {n} lines")
    assert too_long == []
