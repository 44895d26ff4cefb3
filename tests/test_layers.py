"""The import graph of the product: no cycle at run time, and the contracts of `make lint` hold.

`lint-imports` (import-linter, [tool.importlinter] in pyproject.toml) checks the layers and
independence contracts, counting type-checking imports, with a few named ignores. This test is the
stricter floor that has no ignore at all: among the modules of fleet, inventory, pxe and tui, no
import executed at run time (module level or inside a function) closes a cycle.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fleet", "inventory", "pxe", "tui")


def runtime_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Each strongly connected component of more than one module, as a cycle through it."""
    adjacency = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(start: str) -> None:  # Tarjan's algorithm, iterative (no recursion limit)
        work = [(start, iter(adjacency[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(adjacency[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))

    for module in adjacency:
        if module not in index:
            visit(module)
    cycles = []
    for component in components:
        first = component[0]
        path = graph.find_shortest_chain(importer=first, imported=component[1]) or (first, component[1])
        back = graph.find_shortest_chain(importer=component[1], imported=first) or (component[1], first)
        cycles.append([*path, *back[1:]])
    return cycles


def test_no_import_cycle_among_product_modules_at_run_time() -> None:
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)
    cycles = runtime_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_names_a_cycle() -> None:
    """The check above can fail: a graph with a -> b -> a is reported with both modules named."""
    graph = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(name)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert runtime_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_import_contracts_hold() -> None:
    """`lint-imports` (the second half of `make lint`) keeps every contract of pyproject.toml."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


#: The modules that may use the facade: the front ends and the demo (benches live outside the package).
FACADE_USERS = ("fleet.cli", "fleet.demo", "tui", "fleet.service")


def facade_users(root: Path = ROOT) -> list[str]:
    """Product modules outside FACADE_USERS that name ``Fleet`` through any import (``from fleet import
    Fleet``, ``fleet.service.facade``, ``import fleet`` then ``fleet.Fleet``), type-checking ones included."""
    import ast

    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            if module == "fleet" or module.startswith(FACADE_USERS) or "migrations" in path.parts:
                continue
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                names_fleet = isinstance(node, ast.ImportFrom) and node.module in ("fleet", "fleet.service") \
                    and any(a.name == "Fleet" for a in node.names)
                from_service = isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fleet.service")
                imports_service = isinstance(node, ast.Import) and any(
                    a.name.startswith("fleet.service") for a in node.names)
                attribute = isinstance(node, ast.Attribute) and node.attr == "Fleet" \
                    and isinstance(node.value, ast.Name) and node.value.id == "fleet"
                if names_fleet or from_service or imports_service or attribute:
                    found.append(f"{module}:{node.lineno}")
    return found


def test_no_operation_workflow_or_lower_layer_imports_the_facade() -> None:
    """Operations and workflows take a Context (fleet.core.context), never a Fleet: a site worker runs
    them with a context of its own. Only the front ends (CLI, TUI, demo) use the facade."""
    assert facade_users() == []


def test_the_facade_check_names_a_module_that_takes_a_fleet(tmp_path: Path) -> None:
    (tmp_path / "fleet" / "ops").mkdir(parents=True)
    (tmp_path / "fleet" / "ops" / "bad.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fleet import Fleet\n")
    (tmp_path / "fleet" / "ops" / "worse.py").write_text("import fleet\n\ndef f():\n    return fleet.Fleet\n")
    (tmp_path / "fleet" / "cli.py").write_text("from fleet import Fleet\n")  # a front end may
    for package in PACKAGES[1:]:
        (tmp_path / package).mkdir()
    assert facade_users(tmp_path) == ["fleet.ops.bad:3", "fleet.ops.worse:4"]
