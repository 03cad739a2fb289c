#!/usr/bin/env python3
"""The project's import graph: cycles between modules and imports that break the layering.

Every `import` statement counts, including those inside functions (a function-local import still
ties the two modules together; it only hides the tie from a reader). Imports under
`if TYPE_CHECKING:` do not run, so they are left out of cycle detection, but they still count as
dependencies for the layer rules.

Run `python scripts/import_graph.py` to print the cycles and violations; it exits non-zero when
there are any. `tests/architecture/test_imports.py` asserts the same rules.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("audit", "brokers", "ibkrgw", "marketdata", "orders")


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported project module
    line: int
    local: bool  # inside a function
    type_only: bool  # under `if TYPE_CHECKING:`


@dataclass(frozen=True)
class Rule:
    """Modules under any of `source` (dotted prefixes) import nothing under `forbidden`.

    `exempt` lists modules under `source` the rule does not cover; `allowed` lists modules under
    `forbidden` that may still be imported.
    """

    name: str
    source: tuple[str, ...]
    forbidden: tuple[str, ...]
    exempt: tuple[str, ...] = ()
    allowed: tuple[str, ...] = ()


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


# The doors: how requests come in (REST views, websocket consumers, MCP tools, the admin, URL
# routing, management commands). Nothing below them imports them.
DOOR_NAMES = ("api", "mcp_tools", "consumers", "admin", "urls", "routing")
DOOR_MODULES = (
    "ibkrgw.mcp_server",
    "ibkrgw.mcp_transport",
    "ibkrgw.admin_site",
    "ibkrgw.console",
    "ibkrgw.asgi",
    "ibkrgw.ws_auth",
    # The REST door's lanes before Django: they answer requests exactly as the REST views would.
    "ibkrgw.fastlane",
    "ibkrgw.orderlane",
)


def is_door(module: str) -> bool:
    return (
        module.rpartition(".")[2] in DOOR_NAMES
        or ".management" in module
        or any(_under(module, door) for door in DOOR_MODULES)
    )


# The one module that plugs every app (and the console's chores) into the broker layer at start-up.
COMPOSITION_ROOT = ("ibkrgw.wiring",)

# The websocket and MCP code the broker layer must not reach.
WEBSOCKET_AND_MCP = ("ibkrgw.web.ws", "ibkrgw.ws_auth", "ibkrgw.routing", "ibkrgw.mcp_server", "ibkrgw.mcp_transport")

# The broker layer (connection, port, adapter) sits under the apps: it publishes events and offers
# the port; the apps subscribe. It knows nothing of them.
BROKER_LAYER = Rule(
    name="broker layer imports nothing of the apps above it",
    source=("brokers",),
    exempt=("brokers.sim",),
    forbidden=("orders", "marketdata", "audit.api", "audit.admin", "audit.urls", "ibkrgw.admin_site", "ibkrgw.urls")
    + WEBSOCKET_AND_MCP,
)
# The simulator is a separate server speaking the TWS protocol; it shares only plain value types and
# the exchange calendar with the gateway.
SIMULATOR = Rule(
    name="simulator imports nothing of the gateway apps",
    source=("brokers.sim",),
    forbidden=("audit", "brokers", "ibkrgw", "marketdata", "orders"),
    allowed=("brokers.sim", "brokers.adapter", "brokers.hours"),
)
# Services, selectors, models and plumbing never import a door (REST, websockets, MCP, admin).
DOORS = Rule(name="only doors import doors", source=PACKAGES, forbidden=PACKAGES)
RULES = (BROKER_LAYER, SIMULATOR, DOORS)


def project_modules(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Dotted name -> file of every module of the project's packages (migrations left out)."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if "migrations" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: dict[str, Path]) -> None:
        self.module = module
        self.is_package = is_package
        self.known = known
        self.found: list[Import] = []
        self._depth = 0  # function nesting
        self._type_only = 0

    def _add(self, target: str, line: int) -> None:
        # `import a.b.c` names a.b.c; resolve to the longest project module it names
        while target and target not in self.known:
            target = target.rpartition(".")[0]
        if target and target != self.module:
            found = Import(self.module, target, line, self._depth > 0, self._type_only > 0)
            if found not in self.found:  # `from m import a, b` is one import of m
                self.found.append(found)

    def _function(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        is_type_checking = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        )
        if not is_type_checking:
            self.generic_visit(node)
            return
        self._type_only += 1
        for child in node.body:
            self.visit(child)
        self._type_only -= 1
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            package = self.module if self.is_package else self.module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{node.module}" if node.module else package
        else:
            base = node.module or ""
        for alias in node.names:
            # `from pkg import submodule` depends on the submodule; `from mod import name` on mod
            candidate = f"{base}.{alias.name}"
            self._add(candidate if candidate in self.known else base, node.lineno)


def imports(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> list[Import]:
    """Every import between project modules, wherever it stands in the file."""
    known = project_modules(root, packages)
    found: list[Import] = []
    for module, path in known.items():
        collector = _Collector(module, path.name == "__init__.py", known)
        collector.visit(ast.parse(path.read_text(), filename=str(path)))
        found.extend(collector.found)
    return found


def graph(found: Iterable[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for imp in found:
        if not imp.type_only:
            edges.setdefault(imp.source, set()).add(imp.target)
    return edges


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other (directly or not); each group of two or more is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    nodes = sorted(set(edges) | {t for ts in edges.values() for t in ts})
    for start in nodes:
        if start in index:
            continue
        # iterative Tarjan: (node, iterator over its successors)
        work: list[tuple[str, Iterator[str]]] = []
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        work.append((start, iter(sorted(edges.get(start, ())))))
        while work:
            node, successors = work[-1]
            advanced = False
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return sorted(groups, key=lambda g: (-len(g), g))


def shortest_cycle(edges: dict[str, set[str]], group: list[str]) -> list[str]:
    """One shortest cycle through the first module of a group, as a readable example."""
    members = set(group)
    start = group[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(edges.get(node, ())):
                if nxt == start:
                    return paths[node] + [start]
                if nxt in members and nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    return [start]


def cycles(found: Iterable[Import] | None = None) -> list[list[str]]:
    return strongly_connected(graph(imports() if found is None else found))


def _breaks(rule: Rule, imp: Import) -> bool:
    if rule is DOORS:
        return not is_door(imp.source) and is_door(imp.target) and imp.source not in COMPOSITION_ROOT
    return (
        any(_under(imp.source, source) for source in rule.source)
        and not any(_under(imp.source, exempt) for exempt in rule.exempt)
        and any(_under(imp.target, forbidden) for forbidden in rule.forbidden)
        and not any(_under(imp.target, allowed) for allowed in rule.allowed)
    )


def violations(rule: Rule, found: Iterable[Import] | None = None) -> list[Import]:
    found = imports() if found is None else found
    return [imp for imp in found if _breaks(rule, imp)]


def describe_cycles(found: list[Import]) -> str:
    edges = graph(found)
    groups = strongly_connected(edges)
    if not groups:
        return "No import cycles."
    by_edge = {(imp.source, imp.target): imp for imp in found if not imp.type_only}
    lines = [f"{len(groups)} import cycle(s):"]
    for group in groups:
        lines.append(f"- {len(group)} modules: {', '.join(group)}")
        example = shortest_cycle(edges, group)
        lines.append("  for example: " + " -> ".join(example))
        inside = sorted(
            (imp for (src, dst), imp in by_edge.items() if src in group and dst in group),
            key=lambda imp: (imp.source, imp.line),
        )
        for imp in inside:
            where = " (in a function)" if imp.local else ""
            lines.append(f"    {imp.source}:{imp.line} imports {imp.target}{where}")
    return "\n".join(lines)


def describe_violations(rule: Rule, found: list[Import]) -> str:
    bad = violations(rule, found)
    if not bad:
        return f"OK: {rule.name}"
    lines = [f"{len(bad)} import(s) break '{rule.name}':"]
    for imp in sorted(bad, key=lambda imp: (imp.source, imp.line)):
        where = " (in a function)" if imp.local else ""
        lines.append(f"    {imp.source}:{imp.line} imports {imp.target}{where}")
    return "\n".join(lines)


def main() -> int:
    found = imports()
    local = sum(1 for imp in found if imp.local)
    print(f"{len(project_modules())} modules, {len(found)} imports between them ({local} inside functions).")
    print(describe_cycles(found))
    broken = bool(cycles(found))
    for rule in RULES:
        print(describe_violations(rule, found))
        broken = broken or bool(violations(rule, found))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
