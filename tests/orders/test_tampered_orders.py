"""The gateway does not act at the broker on order rows it did not write as they stand.

An approval sends what the held order's row says; a modify sends the row's terms with the new ones; a
cancel sends the broker order id its events name. Someone who can write the database could rewrite a
held order's quantity or side, plant a held order for an operator to approve, or rewrite a seal along
with its row. Each is refused with 409 `ledger_unreadable` naming the row, nothing reaches the broker,
and a halt still cancels what is working there.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.db import connection

from audit.chain import canonical_json
from audit.models import LedgerSeal
from audit.seal import seal_hash
from ibkrgw.actors import Actor, ActorKind, Source
from ibkrgw.errors import GatewayError
from orders import services
from orders.models import Order, OrderEvent
from orders.pipeline import pipeline
from orders.types import OrderRequest
from tests.audit.test_ledger_seal import drop_trigger, raw, rewrite_around_triggers
from tests.conftest import wait_for
from tests.orders.test_pipeline_races import broker_working

pytestmark = pytest.mark.django_db(transaction=True)

AGENT = Actor(kind=ActorKind.MCP, label="mcp:test", source=Source.MCP)
OPERATOR = Actor(kind=ActorKind.USER, label="operator", source=Source.ADMIN, is_admin=True)


@pytest.fixture
def held(ib_runtime, sim_gateway, orders_enabled, settings):
    """An order an agent placed, held for an operator's approval."""
    settings.APPROVAL_REQUIRED_FOR = frozenset({"mcp"})
    sim_gateway.pause_market()
    request = OrderRequest(symbol="AAPL", action="BUY", quantity=Decimal(3), order_type="MKT", client_order_id="h-1")
    return services.order_submit(request=request, actor=AGENT).order


@pytest.fixture
def working(ib_runtime, sim_gateway, orders_enabled, api_client):
    """A limit order resting at the broker (its market paused below the limit)."""
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", "190.00")
    body = {"symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "LMT", "limit_price": "181.00"}
    answer = api_client.post("/api/v1/orders/", {**body, "client_order_id": "w-1"}, format="json")
    assert answer.status_code == 201, answer.content
    wait_for(lambda: len(broker_working(sim_gateway.port)) == 1, message="the order working at the broker")
    return Order.objects.get(pk=answer.json()["id"])


def _sent(sim_gateway) -> list:
    return [(o.order_ref, o.action, o.total_quantity) for o in sim_gateway.received_orders() if not o.what_if]


def copy_row(table: str, column: str, value, changes: dict) -> dict:
    """Insert a copy of the row of `table` whose `column` is `value`, with `changes`, in plain SQL."""
    columns = [c.name for c in connection.introspection.get_table_description(connection.cursor(), table)]
    (row,) = raw(f"SELECT * FROM {table} WHERE {column} = %s", [value])
    copied = dict(zip(columns, row, strict=True)) | changes
    names = ", ".join(f'"{name}"' for name in copied)
    raw(f"INSERT INTO {table} ({names}) VALUES ({', '.join(['%s'] * len(copied))})", list(copied.values()))
    return copied


def _refused(call, table: str, pk, problem: str) -> None:
    with pytest.raises(GatewayError) as refused:
        call()
    error = refused.value
    assert (error.code, error.http_status) == ("ledger_unreadable", 409), error.as_dict()
    rows = {(row["table"], row["pk"]): row["problems"] for row in error.details["rows"]}
    assert (table, str(pk)) in rows, rows
    assert any(problem in text for text in rows[(table, str(pk))]), rows


def test_a_held_order_whose_quantity_was_rewritten_is_not_approved(held, sim_gateway):
    rewrite_around_triggers("orders_order", held.pk.hex, "quantity", "300")
    _refused(lambda: services.order_approve(order_id=held.pk, actor=OPERATOR), "orders_order", held.pk, "differs")
    pipeline().drain()
    assert _sent(sim_gateway) == []
    assert list(OrderEvent.objects.filter(order=held).values_list("status", flat=True)) == ["pending_approval"]
    # Turning it down sends nothing, so the operator can: it is never sent.
    services.order_reject_approval(order_id=held.pk, actor=OPERATOR, reason="tampered")
    assert list(OrderEvent.objects.filter(order=held).values_list("status", flat=True)) == [
        "pending_approval",
        "rejected",
    ]


def test_a_held_order_planted_behind_the_gateways_back_is_not_approved(held, sim_gateway):
    """A copy of a genuine held order under a new id and key: every value is one the gateway writes, but the
    gateway never sealed it."""
    planted = copy_row("orders_order", "id", held.pk.hex, {"id": "0" * 31 + "1", "client_order_id": "planted-1"})
    copy_row("orders_orderevent", "order_id", held.pk.hex, {"id": 10_000, "order_id": planted["id"]})
    planted_pk = Order.objects.get(client_order_id="planted-1").pk
    _refused(lambda: services.order_approve(order_id=planted_pk, actor=OPERATOR), "orders_order", planted_pk, "no seal")
    pipeline().drain()
    assert _sent(sim_gateway) == []


def test_a_row_rewritten_with_its_seal_is_refused_for_want_of_the_seal_key(held, sim_gateway):
    """The forger rewrites the row and the content of its seal to match (the chain's hash too): only the MAC,
    made with a key the database does not hold, gives it away."""
    rewrite_around_triggers("orders_order", held.pk.hex, "action", "SELL")
    where = '"table" = %s AND row_pk = %s'
    [(content,)] = raw(f"SELECT content FROM audit_ledgerseal WHERE {where}", ["orders_order", str(held.pk)])
    forged = canonical_json(json.loads(content) | {"action": "SELL"})
    drop_trigger("audit_ledgerseal", "update")  # put back by the test database's teardown
    raw(f"UPDATE audit_ledgerseal SET content = %s WHERE {where}", [forged, "orders_order", str(held.pk)])
    seal = LedgerSeal.objects.get(table="orders_order", row_pk=str(held.pk))
    raw("UPDATE audit_ledgerseal SET seal_hash = %s WHERE seq = %s", [seal_hash(seal), seal.seq])
    _refused(lambda: services.order_approve(order_id=held.pk, actor=OPERATOR), "orders_order", held.pk, "MAC mismatch")
    pipeline().drain()
    assert _sent(sim_gateway) == []


def test_a_working_order_whose_side_was_rewritten_is_neither_modified_nor_cancelled_but_a_halt_cancels_it(
    working, sim_gateway, api_client
):
    rewrite_around_triggers("orders_order", working.pk.hex, "action", "garbage")
    modify = api_client.patch(f"/api/v1/orders/{working.pk}/", {"quantity": "2"}, format="json")
    assert (modify.status_code, modify.json()["error"]["code"]) == (409, "ledger_unreadable"), modify.content
    cancel = api_client.post(f"/api/v1/orders/{working.pk}/cancel/", {}, format="json")
    assert (cancel.status_code, cancel.json()["error"]["code"]) == (409, "ledger_unreadable"), cancel.content
    pipeline().drain()
    [(ref, action, quantity)] = _sent(sim_gateway)
    assert (ref, action, quantity) == ("w-1", "BUY", 1)  # the broker keeps the order as placed
    assert len(broker_working(sim_gateway.port)) == 1
    assert api_client.post("/api/v1/trading/halt/", {"reason": "tampered ledger"}, format="json").status_code == 200
    wait_for(lambda: broker_working(sim_gateway.port) == [], message="the halt cancels it at the broker")
