"""Chart data: price bars with the operator's fills marked, and the account snapshots behind the equity chart."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from ibkrgw.console.snapshots import account_snapshot_record
from marketdata.models import AccountSnapshot
from orders import services
from orders.models import OrderEvent
from orders.types import OrderRequest
from tests.conftest import wait_for
from tests.console.conftest import AGENT

pytestmark = pytest.mark.django_db(transaction=True)


def test_price_chart_has_bars_and_marks_each_fill(ib_runtime, sim_gateway, orders_enabled, staff_client):
    for action in ("BUY", "SELL"):
        order = services.order_submit(
            request=OrderRequest(symbol="AAPL", action=action, quantity=Decimal(2), order_type="MKT"), actor=AGENT
        ).order
        wait_for(
            lambda o=order: OrderEvent.objects.filter(order=o, status="filled").exists(), message=f"{action} filled"
        )
    data = staff_client.get(reverse("admin:ibkrgw_chart_price"), {"symbol": "aapl"}).json()
    assert data["symbol"] == "AAPL" and data["bars"]  # as few as one, minutes after the session opened
    times = [bar["time"] for bar in data["bars"]]
    assert times == sorted(set(times))
    shapes = sorted(m["shape"] for m in data["markers"])
    assert shapes == ["arrowDown", "arrowUp"]
    assert all(m["time"] in times for m in data["markers"])
    assert any(m["text"].startswith("B 2 @ ") for m in data["markers"])


def test_price_chart_of_an_unknown_symbol_says_why(ib_runtime, staff_client):
    data = staff_client.get(reverse("admin:ibkrgw_chart_price"), {"symbol": "NOSUCHTHING"}).json()
    assert data["bars"] == [] and data["error"]


def test_snapshots_follow_the_interval_and_old_ones_are_pruned(ib_runtime, staff_client, settings):
    settings.ACCOUNT_SNAPSHOT_INTERVAL_S = 3600
    # The connection's chores record the first one by themselves.
    first = wait_for(lambda: AccountSnapshot.objects.first(), message="a snapshot recorded by the chore")
    assert first.realized_pnl is not None and first.unrealized_pnl is not None
    assert account_snapshot_record() is None  # within the interval: nothing new
    assert AccountSnapshot.objects.count() == 1
    old = AccountSnapshot.objects.create(
        account=first.account, taken_at=timezone.now() - timedelta(days=settings.ACCOUNT_SNAPSHOT_KEEP_DAYS + 1)
    )
    settings.ACCOUNT_SNAPSHOT_INTERVAL_S = 1
    AccountSnapshot.objects.filter(pk=first.pk).update(taken_at=timezone.now() - timedelta(seconds=5))
    account_snapshot_record()  # due now (the chore may take it first: either way one more row)
    second = wait_for(lambda: AccountSnapshot.objects.exclude(pk__in=[first.pk, old.pk]).first(), message="due")
    assert not AccountSnapshot.objects.filter(pk=old.pk).exists()
    first.refresh_from_db()
    settings.ACCOUNT_SNAPSHOT_INTERVAL_S = 3600  # no more while the chart is read
    data = staff_client.get(reverse("admin:ibkrgw_chart_equity")).json()
    assert data["account"] == first.account
    values = [p["value"] for p in data["series"]["total_pnl"]]
    assert values[:2] == [
        float(first.realized_pnl + first.unrealized_pnl),
        float(second.realized_pnl + second.unrealized_pnl),
    ]


def test_a_value_rewritten_in_the_last_snapshot_does_not_stop_the_series(ib_runtime, settings, staff_client):
    """Someone holding the database writes a number no decimal column can hold into the last snapshot: the chore
    read that whole row to learn its time, failed on the value at every run (an error in the log), and the
    equity chart stopped there (its data answered 500); so it did on a time that is no time. The chore reads
    the time alone, records the next snapshot when it is due (at once when that time cannot be read), and the
    chart leaves such rows out and says so."""
    settings.ACCOUNT_SNAPSHOT_INTERVAL_S = 3600
    first = wait_for(lambda: AccountSnapshot.objects.first(), message="a snapshot recorded by the chore")
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE marketdata_accountsnapshot SET cash = %s, taken_at = %s WHERE id = %s",
            ["1e999", timezone.now() - timedelta(seconds=5), first.pk],
        )
    settings.ACCOUNT_SNAPSHOT_INTERVAL_S = 1
    account_snapshot_record()  # due now (the chore may take it first: either way one more row)
    settings.ACCOUNT_SNAPSHOT_INTERVAL_S = 3600
    wait_for(lambda: AccountSnapshot.objects.exclude(pk=first.pk).exists(), message="the next snapshot")
    # A time that is no time in the last one: the next is due at once, and then the interval holds again.
    second = AccountSnapshot.objects.order_by("-id").first()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE marketdata_accountsnapshot SET taken_at = 'garbage' WHERE id = %s", [second.pk])
    account_snapshot_record()
    wait_for(lambda: AccountSnapshot.objects.filter(pk__gt=second.pk).exists(), message="due at once")
    assert account_snapshot_record() is None
    # The chart draws the snapshots it can read and says which one it leaves out.
    chart = staff_client.get(reverse("admin:ibkrgw_chart_equity")).json()
    assert sorted(chart["unreadable"]) == sorted(
        f"Account snapshot {pk} cannot be read and is not drawn." for pk in (first.pk, second.pk)
    )
    assert chart["series"]["total_pnl"]


def test_no_snapshot_without_a_broker(staff_client):
    assert account_snapshot_record() is None
    assert staff_client.get(reverse("admin:ibkrgw_chart_equity")).json()["series"]["total_pnl"] == []


def test_charts_page_uses_the_vendored_library(staff_client):
    body = staff_client.get(reverse("admin:ibkrgw_charts"), {"symbol": "MSFT"}).content.decode()
    assert "/static/vendor/lightweight-charts-4.2.3/lightweight-charts.standalone.production.js" in body
    assert "?symbol=MSFT" in body and 'data-chart="equity"' in body
    assert "cdn" not in body.lower() and "unpkg" not in body.lower()


def _account_values_seen_by_another_client(port: int, account: str) -> tuple[Decimal, Decimal]:
    """(NetLiquidation, TotalCashValue) as a separate ib_async client hears them from the gateway."""
    from ib_async import IB

    outside = IB()
    outside.connect("127.0.0.1", port, clientId=77, timeout=5, account=account)
    try:
        values = {
            v.tag: Decimal(v.value)
            for v in outside.accountValues(account)
            if v.tag in ("NetLiquidation", "TotalCashValue") and v.currency not in ("", "BASE")
        }
    finally:
        outside.disconnect()
    return values["NetLiquidation"], values["TotalCashValue"]


@pytest.fixture
def still_market_runtime(request, sim_gateway, settings):
    """The IB runtime on a market that does not move: the account's value stays what was last streamed."""
    sim_gateway.pause_market()
    settings.QUOTE_STALE_AFTER_S = 3600  # a still market sends no ticks; its quotes are not stale
    return request.getfixturevalue("ib_runtime")


def test_the_snapshot_chore_records_the_streamed_account_value_and_asks_the_broker_for_nothing(
    still_market_runtime, sim_gateway, orders_enabled, settings, staff_client
):
    from tests.hostile.conftest import BrokerTap

    bought = services.order_submit(
        request=OrderRequest(symbol="AAPL", action="BUY", quantity=Decimal(3), order_type="MKT"), actor=AGENT
    ).order
    wait_for(lambda: OrderEvent.objects.filter(order=bought, status="filled").exists(), message="filled")
    net_liquidation, cash = _account_values_seen_by_another_client(sim_gateway.port, bought.account)
    assert cash < net_liquidation  # the shares bought are worth something

    tap = BrokerTap(sim_gateway)  # from here on, only this process's connection talks to the gateway
    since = AccountSnapshot.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    settings.ACCOUNT_SNAPSHOT_INTERVAL_S = 1

    def recorded_as_streamed():
        # The gateway streams account values shortly after a fill: a first snapshot may predate them.
        rows = list(AccountSnapshot.objects.filter(pk__gt=since).order_by("pk"))
        return len(rows) >= 2 and (rows[-1].net_liquidation, rows[-1].cash) == (net_liquidation, cash)

    wait_for(recorded_as_streamed, message="snapshots of the account as the gateway streams it")
    settings.ACCOUNT_SNAPSHOT_INTERVAL_S = 3600  # no more while the chart is read
    latest = AccountSnapshot.objects.order_by("-taken_at").first()
    assert (latest.account, latest.net_liquidation, latest.cash) == (bought.account, net_liquidation, cash)
    assert latest.unrealized_pnl is not None  # the open position is marked
    tap.assert_untouched()
    assert tap.seen == [], "the chore sent the gateway a message"

    # The P&L chart draws net liquidation over time from the same rows.
    data = staff_client.get(reverse("admin:ibkrgw_chart_equity")).json()
    drawn = data["series"]["net_liquidation"]
    assert drawn[-1] == {"time": int(latest.taken_at.timestamp()), "value": float(net_liquidation)}
    recorded = AccountSnapshot.objects.filter(net_liquidation__isnull=False)
    assert len(drawn) == len({int(row.taken_at.timestamp()) for row in recorded}) >= 2


def test_price_chart_names_a_fill_it_cannot_read_and_marks_the_others(ib_runtime, staff_client):
    from tests.audit.test_ledger_seal import rewrite_around_triggers, text_stored_database
    from tests.factories import FillFactory

    text_stored_database()
    readable = FillFactory(quantity=Decimal(2))
    tampered = FillFactory(quantity=Decimal(3))
    rewrite_around_triggers("orders_fill", tampered.pk, "price", "abc")
    response = staff_client.get(reverse("admin:ibkrgw_chart_price"), {"symbol": "AAPL"})
    assert response.status_code == 200
    data = response.json()
    assert [m["text"] for m in data["markers"]] == [f"B 2 @ {readable.price.normalize():f}"]
    (named,) = data["unreadable"]
    assert named.startswith(f'orders_fill pk={tampered.pk}: price holds "abc"') and "audit_verify" in named
