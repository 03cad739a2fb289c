"""`/ws/orders/` over a ledger with a value rewritten into text the application cannot read: the replay and
the live stream go on, an error frame `ledger_unreadable` (with its seq) takes the place of each event whose
order or fill cannot be read; and a failure while opening a stream is an `internal_error` frame and 1011."""

from __future__ import annotations

from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from audit import events
from orders import publish
from orders.models import OrderStatus
from tests.audit.test_ledger_seal import rewrite_around_triggers, text_stored_database
from tests.factories import CommissionFactory, FillFactory, OrderEventFactory, OrderFactory, audit_entry
from tests.ws.conftest import TIMEOUT, communicator, connected, receive_until

pytestmark = pytest.mark.django_db(transaction=True)


def _ledger() -> dict:
    """Two orders with a fill each, their audit entries in seq order; then the first fill's price rewritten."""
    text_stored_database()
    rows: dict = {"seqs": []}
    for name, symbol in (("tampered", "AAPL"), ("intact", "MSFT")):
        order = OrderFactory(client_order_id=f"{name}-1", symbol=symbol)
        OrderEventFactory(order=order, status=OrderStatus.FILLED, filled_quantity=Decimal(10))
        fill = FillFactory(order=order, symbol=symbol)
        CommissionFactory(fill=fill)
        rows[name], rows[f"{name}_fill"] = order, fill
        rows["seqs"].append(audit_entry(target_type="order", target_id=str(order.pk)).seq)
        rows["seqs"].append(audit_entry(event=events.FILL_RECORDED, target_type="fill", target_id=fill.exec_id).seq)
    rewrite_around_triggers("orders_fill", rows["tampered_fill"].pk, "price", "abc")
    return rows


def _unreadable_frame(frame: dict, seq: int, fill_pk: int) -> None:
    assert frame["type"] == "error" and frame["code"] == "ledger_unreadable", frame
    assert frame["seq"] == seq
    assert (frame["details"]["table"], frame["details"]["pk"]) == ("orders_fill", str(fill_pk))
    assert "manage.py audit_verify" in frame["message"]


async def test_a_replay_through_an_unreadable_row_names_it_and_goes_on(ws_key):
    rows = await sync_to_async(_ledger)()
    ws = await connected("/ws/orders/?after_seq=0", ws_key)
    resumed, frames = await receive_until(ws, lambda f: f["type"] == "resumed")
    assert [f["seq"] for f in frames] == rows["seqs"]
    fill_pk = rows["tampered_fill"].pk
    _unreadable_frame(frames[0], rows["seqs"][0], fill_pk)  # the order: its fill cannot be read
    assert frames[0]["details"]["target_id"] == str(rows["tampered"].pk)
    _unreadable_frame(frames[1], rows["seqs"][1], fill_pk)  # the fill itself
    assert frames[1]["details"]["target_id"] == rows["tampered_fill"].exec_id
    assert frames[2]["type"] == "order" and frames[2]["order"]["client_order_id"] == "intact-1"
    assert frames[3]["type"] == "fill" and frames[3]["fill"]["price"] == "189.42"
    assert resumed["replayed"] == 4 and resumed["last_seq"] == rows["seqs"][-1]
    # Live events keep coming, the unreadable order's too (as an error frame in its place).
    seq = (await sync_to_async(audit_entry)(target_type="order", target_id=str(rows["tampered"].pk))).seq
    await sync_to_async(publish.order_event)(order_id=rows["tampered"].pk, event_id=0, seq=seq)
    live = await ws.receive_json_from(timeout=TIMEOUT)
    _unreadable_frame(live, seq, fill_pk)
    seq = (await sync_to_async(audit_entry)(target_type="order", target_id=str(rows["intact"].pk))).seq
    await sync_to_async(publish.order_event)(order_id=rows["intact"].pk, event_id=0, seq=seq)
    live = await ws.receive_json_from(timeout=TIMEOUT)
    assert live["type"] == "order" and live["seq"] == seq and live["order"]["client_order_id"] == "intact-1"
    await ws.disconnect()


async def test_a_failure_while_opening_the_stream_is_an_internal_error_frame_and_1011(ws_key, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("a bug while reading the ledger")

    await sync_to_async(audit_entry)(target_type="order", target_id="x")  # something to replay
    monkeypatch.setattr("orders.consumers.ledger_frames_after", broken)
    ws = communicator("/ws/orders/?after_seq=0", key=ws_key)
    assert (await ws.connect(timeout=TIMEOUT))[0]
    error = await ws.receive_json_from(timeout=TIMEOUT)
    assert error == {"type": "error", "code": "internal_error", "message": "Internal error.", "details": {}}
    closing = await ws.receive_output(timeout=TIMEOUT)
    assert closing["type"] == "websocket.close" and closing["code"] == 1011


async def test_a_json_number_no_float_can_hold_is_named_in_the_replay_not_a_1011(ws_key):
    """SQLite takes `1e999` as valid JSON, which Python reads as infinity, and a frame cannot carry infinity:
    the replay failed while opening (internal_error, 1011). The event's order is named instead, and the stream
    goes on."""

    def ledger() -> dict:
        text_stored_database()
        rows: dict = {"seqs": []}
        for name, symbol in (("tampered", "AAPL"), ("intact", "MSFT")):
            order = OrderFactory(client_order_id=f"{name}-1", symbol=symbol)
            rows[f"{name}_event"] = OrderEventFactory(order=order, status=OrderStatus.SUBMITTED)
            rows[name] = order
            rows["seqs"].append(audit_entry(target_type="order", target_id=str(order.pk)).seq)
        rewrite_around_triggers("orders_orderevent", rows["tampered_event"].pk, "data", '{"x": 1e999}')
        return rows

    rows = await sync_to_async(ledger)()
    ws = await connected("/ws/orders/?after_seq=0", ws_key)
    resumed, frames = await receive_until(ws, lambda f: f["type"] == "resumed")
    assert [f["seq"] for f in frames] == rows["seqs"]
    assert frames[0]["type"] == "error" and frames[0]["code"] == "ledger_unreadable", frames[0]
    assert (frames[0]["details"]["table"], frames[0]["details"]["pk"]) == (
        "orders_orderevent",
        str(rows["tampered_event"].pk),
    )
    assert frames[1]["type"] == "order" and frames[1]["order"]["client_order_id"] == "intact-1"
    assert resumed["replayed"] == 2
    await ws.disconnect()
