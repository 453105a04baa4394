"""The architecture as a test: each layer imports only the layers below it.

``app.cli`` -> ``app.worker`` -> ``agents`` -> ``app.stream`` | ``app.tools`` ->
``app.adapters`` -> ``app.service`` -> ``schemas`` -> ``app.domain`` (LAYOUT.md). ``app.stream``
and ``app.tools`` are independent of each other. ``app.settings`` and ``app.errors`` are a
shared kernel that anything but ``app.domain`` may import. Every import counts, also one
inside a function (``ast.walk``): a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = [
    "app.cli",
    "app.worker",
    "agents",
    "app.stream|app.tools",
    "app.adapters",
    "app.service",
    "schemas",
    "app.domain",
]
KERNEL = ("app.settings", "app.errors")
SOURCES = sorted(p for pkg in ("app", "agents", "schemas") for p in (ROOT / pkg).rglob("*.py"))


def module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _within(mod: str, prefix: str) -> bool:
    return mod == prefix or mod.startswith(prefix + ".")


def rank(mod: str) -> int | None:
    """The layer of a module (0 = top), None for the kernel and for what is no layer."""
    for i, layer in enumerate(LAYERS):
        if any(_within(mod, p) for p in layer.split("|")):
            return i
    return None


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports (``from a import b`` counts as ``a.b``: b may be a
    module), relative imports resolved."""
    me = module_of(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[: len(up) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def own(name: str) -> bool:
    return name.split(".")[0] in ("app", "agents", "schemas")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_upward_import(path: Path) -> None:
    me = module_of(path)
    mine = rank(me)
    for name in sorted(filter(own, imports_of(path))):
        if any(_within(name, k) for k in KERNEL):
            assert not _within(me, "app.domain"), f"{me} imports {name}: the core stays pure"
            continue
        theirs = rank(name)
        if mine is None or theirs is None:
            continue
        layer = LAYERS[theirs]
        assert theirs >= mine or LAYERS[mine] == layer, f"{me} imports {name} (upward: {layer})"
        if "|" in LAYERS[mine] and theirs == mine:  # stream and tools stay apart
            assert name.split(".")[1] == me.split(".")[1], f"{me} imports {name} (sideways)"


def test_the_rank_rule() -> None:
    assert rank("app.cli.worker") == 0 and rank("app.domain.engine") == len(LAYERS) - 1
    assert rank("app.stream.app") == rank("app.tools.fit") and rank("app.settings") is None
    assert imports_of(ROOT / "app" / "domain" / "engine.py") >= {"app.domain.state.CustomerState"}


def _module_graph() -> dict[str, set[str]]:
    """Module -> the modules of this project it imports (``from a import b``: ``a.b`` if
    that is a module, else ``a``)."""
    modules = {module_of(p): p for p in SOURCES}
    graph: dict[str, set[str]] = {}
    for mod, path in modules.items():
        targets: set[str] = set()
        for name in filter(own, imports_of(path)):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != mod:
                targets.add(name)
        graph[mod] = targets
    return graph


def test_no_import_cycles() -> None:
    """No two modules import each other, directly or round a loop (Tarjan's strongly
    connected components; an import only for type checking counts too)."""
    graph = _module_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"
