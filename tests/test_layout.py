"""The tree says what is what: no import cycles, and production never imports simulations.

Every ``import`` statement of the five packages counts, at module level or inside a
function (a lazy import is still a dependency), except those under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("server", "client_sdk", "consent", "dashboard", "privacy")
SIMULATION = ("server.sim", "client_sdk.sim")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts
    }


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str) -> Iterator[str]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (name for child in node.orelse for name in _imports(child, module))
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level] if module in MODULES else []
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:  # `from package import module` names the module
                submodule = f"{target}.{alias.name}"
                yield submodule if submodule in MODULES else target
        yield from _imports(node, module)


def _project_imports(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    found = set()
    for name in _imports(tree, module):
        # The longest project module the import names (a.b.c -> a.b if c is a symbol).
        parts = name.split(".")
        while parts and ".".join(parts) not in MODULES:
            parts.pop()
        if parts and ".".join(parts) != module:
            found.add(".".join(parts))
    return found


GRAPH = {module: _project_imports(module) for module in MODULES}


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_the_graph_sees_the_imports_it_should() -> None:
    assert "server.training" in GRAPH["server.run"]
    assert "client_sdk.protocol" in GRAPH["server.training"]
    assert "server.sim.federation" in GRAPH["server.sim.app"]


def test_no_module_imports_itself_through_others() -> None:
    assert _cycle() is None, " -> ".join(_cycle() or [])


@pytest.mark.parametrize(
    "module",
    sorted(m for m in MODULES if m.startswith("server") and not m.startswith("server.sim")),
)
def test_production_server_code_imports_no_simulation_and_no_dashboard(module: str) -> None:
    forbidden = {
        target for target in GRAPH[module] if target.startswith((*SIMULATION, "dashboard"))
    }
    assert not forbidden, f"{module} imports {sorted(forbidden)}"


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if m.startswith("client_sdk") and ".sim" not in m)
)
def test_the_sdk_imports_no_simulation_and_no_server(module: str) -> None:
    forbidden = {t for t in GRAPH[module] if t.startswith(("client_sdk.sim", "server"))}
    assert not forbidden, f"{module} imports {sorted(forbidden)}"
