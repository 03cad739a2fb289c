"""Rows rewritten behind the gateway's back must not take a door down.

Someone holding the database (the append-only triggers dropped, as they could) writes a value the
gateway never writes into one column of every row of a table: text into a number, date or UUID
column, an unknown choice into a status or side, valid JSON of the wrong shape into a JSON column,
a number no decimal column could hold, a date at the end of the calendar. Then every door a user
or the operator would open is opened: no answer may be a 5xx (the tampered row is named with 409
`ledger_unreadable`, left out, or shown as stored; `audit_verify` names it).

One test per column, each on a ledger holding a filled market order and a resting limit order.
"""

from __future__ import annotations

import pytest
from django.apps import apps
from django.db import connection, models
from django.test import Client

from audit.triggers import APPEND_ONLY_TABLES, drop_triggers
from orders.pipeline import pipeline
from tests.hostile.conftest import order_body as _order

pytestmark = pytest.mark.django_db(transaction=True)
APPS = ("orders", "audit", "marketdata", "brokers", "ibkrgw")
TEXT = "garbage"
# Valid JSON (SQLite's CHECK refuses anything else) of every shape the gateway does not write there.
JSON_SHAPES = ('"garbage"', "[1, 2]", '{"x": {"y": null}}', "12", "null")
NUMBERS = ("NaN", "1e999", "-1e999", "123456789012345678901234567890")
DATES = ("9999-12-31 23:59:59.999999", "0001-01-01 00:00:00")


def _values(field: models.Field) -> tuple[str, ...]:
    if isinstance(field, models.JSONField):
        return JSON_SHAPES
    if isinstance(field, (models.DecimalField, models.FloatField)):
        return (TEXT, *NUMBERS)
    if isinstance(field, models.DateTimeField):
        return (TEXT, *DATES)
    return (TEXT,)


def _columns() -> list:
    typed = (
        models.DateTimeField,
        models.DateField,
        models.DecimalField,
        models.IntegerField,
        models.UUIDField,
        models.JSONField,
        models.BooleanField,
        models.FloatField,
    )
    found = []
    for model in apps.get_models():
        if model._meta.app_label not in APPS:
            continue
        for field in model._meta.concrete_fields:
            if field.primary_key or field.is_relation:
                continue
            if isinstance(field, typed) or (isinstance(field, models.CharField) and field.choices):
                table = model._meta.db_table
                found.append(pytest.param(table, field.column, _values(field), id=f"{table}.{field.column}"))
    return found


def _doors(api_client, console: Client, filled: str, working: str, attempt: int) -> dict:
    return {
        "health": lambda: api_client.get("/api/v1/health/"),
        "summary": lambda: api_client.get("/api/v1/account/summary/"),
        "positions": lambda: api_client.get("/api/v1/account/positions/"),
        "pnl": lambda: api_client.get("/api/v1/account/pnl/"),
        "contracts": lambda: api_client.get("/api/v1/contracts/?symbol=AAPL"),
        "quote": lambda: api_client.get("/api/v1/quotes/AAPL/"),
        "orders": lambda: api_client.get("/api/v1/orders/"),
        "order": lambda: api_client.get(f"/api/v1/orders/{filled}/"),
        "fills": lambda: api_client.get("/api/v1/fills/"),
        "audit": lambda: api_client.get("/api/v1/audit/"),
        "audit head": lambda: api_client.get("/api/v1/audit/head/"),
        "place": lambda: api_client.post("/api/v1/orders/", _order(client_order_id=f"edit-p{attempt}"), format="json"),
        "retry": lambda: api_client.post("/api/v1/orders/", _order(client_order_id="edit-2"), format="json"),
        "preview": lambda: api_client.post("/api/v1/orders/preview/", _order(), format="json"),
        "modify": lambda: api_client.patch(f"/api/v1/orders/{working}/", {"quantity": "2"}, format="json"),
        "cancel": lambda: api_client.post(f"/api/v1/orders/{working}/cancel/", {}, format="json"),
        "halt": lambda: api_client.post("/api/v1/trading/halt/", {"reason": "edit"}, format="json"),
        "resume": lambda: console.post("/api/v1/trading/resume/", {"reason": "edit"}, content_type="application/json"),
        "console": lambda: console.get("/admin/dashboard/"),
        "admin index": lambda: console.get("/admin/"),
        "admin orders": lambda: console.get("/admin/orders/order/"),
        "admin order": lambda: console.get(f"/admin/orders/order/{filled}/change/"),
        "admin fills": lambda: console.get("/admin/orders/fill/"),
        "admin audit": lambda: console.get("/admin/audit/auditentry/"),
        "admin keys": lambda: console.get("/admin/ibkrgw/scopedapikey/"),
    }


@pytest.mark.parametrize(("table", "column", "values"), _columns())
def test_no_door_answers_5xx_after_a_column_is_rewritten(ledger, api_client, django_user_model, table, column, values):
    filled, working = ledger
    with connection.schema_editor() as editor:
        for append_only in APPEND_ONLY_TABLES:
            drop_triggers(editor, append_only)  # put back by the test database's teardown
    console = Client(raise_request_exception=False)
    console.force_login(django_user_model.objects.create_superuser("root", "", "pw-not-used-elsewhere"))
    api_client.raise_request_exception = False
    failures = {}
    for attempt, value in enumerate(values):
        with connection.cursor() as cursor:
            cursor.execute(f'UPDATE "{table}" SET "{column}" = %s', [value])
        for door, call in _doors(api_client, console, filled, working, attempt).items():
            status = call().status_code
            if status >= 500:
                failures[f"{value} -> {door}"] = status
        pipeline().drain()
    assert failures == {}
