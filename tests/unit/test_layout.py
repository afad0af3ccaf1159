"""The shipped package's dependency rule, checked by walking every import (docs/architecture.md).

- Nothing in ``ari_app`` imports the dev tooling (``devtools``) or the tests.
- Layers point one way: each layer imports only the layers listed for it below; the
  composition root (``main``, ``cli``) may import anything shipped.
- No import cycle between modules, ``if TYPE_CHECKING:`` imports included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ari_app"

# layer -> the layers it may import (its own included)
ALLOWED: dict[str, set[str]] = {
    "outcomes": set(),
    "records": {"records", "outcomes"},
    "sip": {"sip"},
    "ari": {"ari"},
    "config": {"config", "outcomes", "records"},
    "asterisk": {"asterisk", "config"},
    "store": {"store", "config", "outcomes", "records"},
    "connect": {"connect", "ari", "config"},
    "agents": {"agents", "ari", "config"},
    "calls": {"calls", "ari", "sip", "config", "store", "outcomes", "records", "connect"},
    "reporting": {"reporting", "config", "store", "outcomes", "records"},
    "main": {"*"},
    "cli": {"*"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """Every module ``name`` imports (absolute names; ``from a import b`` counts a.b when b
    is a module)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
    return found


def layer_of(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "ari_app"


def test_the_walk_sees_the_package() -> None:
    assert {"ari_app.calls.session", "ari_app.ari.events", "ari_app.main"} <= set(MODULES)
    assert "ari_app.calls.states" in imports_of("ari_app.calls.session")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_nothing_shipped_imports_tooling_or_tests(name: str) -> None:
    bad = {i for i in imports_of(name) if i.split(".")[0] in {"devtools", "tests"}}
    assert not bad, f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != "ari_app"))
def test_layers_point_one_way(name: str) -> None:
    allowed = ALLOWED[layer_of(name)]
    if "*" in allowed:
        return
    used = {layer_of(i) for i in imports_of(name) if i.startswith("ari_app.")}
    assert used <= allowed, f"{name} ({layer_of(name)}) imports layers {sorted(used - allowed)}"


def test_no_import_cycle() -> None:
    graph = {n: {i for i in imports_of(n) if i in MODULES and i != n} for n in MODULES}
    # a package imports its __init__ implicitly; only explicit edges count
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
