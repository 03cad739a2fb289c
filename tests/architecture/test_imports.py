"""The import graph keeps its layers: no cycles, the broker layer under the apps, the simulator apart.

Function-local imports count like any other. `scripts/import_graph.py` prints the same findings.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
import_graph = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = import_graph  # dataclasses look their module up while being built
_spec.loader.exec_module(import_graph)

FOUND = import_graph.imports()

# Broker modules that still call up into the apps, with what they import; each leaves this set once the
# apps subscribe to broker events instead.
BROKER_MODULES_REACHING_UP: dict[str, str] = {}


def _broker_params():
    for module in sorted(import_graph.project_modules()):
        if not import_graph._under(module, "brokers") or import_graph._under(module, "brokers.sim"):
            continue
        reason = BROKER_MODULES_REACHING_UP.get(module)
        marks = [pytest.mark.xfail(strict=True, reason=f"{module} {reason}")] if reason else []
        yield pytest.param(module, marks=marks, id=module)


def _listing(bad) -> str:
    return "\n".join(f"{imp.source}:{imp.line} imports {imp.target}" for imp in bad)


def test_no_import_cycle():
    """No cycle between modules, function-local imports included."""
    report = import_graph.describe_cycles(FOUND)
    print(report)
    assert import_graph.cycles(FOUND) == [], report


@pytest.mark.parametrize("module", list(_broker_params()))
def test_broker_layer_imports_nothing_above_it(module):
    bad = [imp for imp in import_graph.violations(import_graph.BROKER_LAYER, FOUND) if imp.source == module]
    assert bad == [], _listing(bad)


def test_simulator_imports_nothing_of_the_gateway():
    bad = import_graph.violations(import_graph.SIMULATOR, FOUND)
    assert bad == [], _listing(bad)


def test_only_doors_import_doors():
    """Services, selectors and the websocket publisher render through payload modules, never a REST view."""
    bad = import_graph.violations(import_graph.DOORS, FOUND)
    assert bad == [], _listing(bad)


def test_function_local_imports_close_a_cycle(tmp_path):
    """The checker sees an import hidden in a function, and a relative one, as a dependency."""
    package = tmp_path / "shop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "orders.py").write_text("from . import stock\n")
    (package / "stock.py").write_text("def reserve():\n    from shop.orders import place\n    return place\n")
    (package / "prices.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from shop import orders\n"
    )

    found = import_graph.imports(tmp_path, packages=["shop"])

    assert import_graph.cycles(found) == [["shop.orders", "shop.stock"]]
    local = [imp for imp in found if imp.local]
    assert [(imp.source, imp.target) for imp in local] == [("shop.stock", "shop.orders")]
    # a type-only import is a dependency for the layer rules but not a runtime cycle
    assert [(imp.source, imp.target, imp.type_only) for imp in found if imp.source == "shop.prices"] == [
        ("shop.prices", "shop.orders", True)
    ]
