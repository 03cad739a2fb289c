"""Every dataclass of the broker interface crosses the channel layer intact (types included)."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import msgpack
import pytest

from brokers.adapter import (
    AccountRisk,
    AccountSummary,
    AccountValue,
    Bar,
    BrokerCommission,
    BrokerConnectionChanged,
    BrokerExecution,
    BrokerHealth,
    BrokerOrderRequest,
    BrokerOrderStatus,
    BrokerOrderWithdrawn,
    BrokerSnapshot,
    ContractInfo,
    ContractSpec,
    OrderAck,
    OrderPreview,
    PnLInfo,
    PositionInfo,
    Quote,
)
from brokers.scaleout.protocol import DATACLASSES, decode, decode_error, encode, encode_error
from ibkrgw.errors import BrokerUnavailable, ErrorCode, GatewayError

AT = datetime(2026, 3, 4, 15, 30, 1, 123456, tzinfo=UTC)
AAPL = ContractInfo(
    con_id=265598,
    symbol="AAPL",
    sec_type="STK",
    exchange="SMART",
    currency="USD",
    primary_exchange="NASDAQ",
    long_name="APPLE INC",
    min_tick=Decimal("0.01"),
    time_zone="US/Eastern",
)
ES = ContractInfo(
    con_id=495512563,
    symbol="ES",
    sec_type="FUT",
    exchange="CME",
    currency="USD",
    expiry="20261218",
    multiplier="50",
    strike=Decimal("0E-8"),
    min_tick=Decimal("0.25"),
)
STATUS = BrokerOrderStatus(
    order_ref="so-1",
    broker_order_id=8,
    perm_id=1070001,
    client_id=1,
    status="Filled",
    filled=Decimal("3"),
    remaining=Decimal("0"),
    average_fill_price=Decimal("190.2333333333"),
    at=AT,
)
EXECUTION = BrokerExecution(
    exec_id="0001f4e8.6553a1b2.01.01",
    order_ref="so-1",
    broker_order_id=8,
    perm_id=None,
    account="DU1234567",
    con_id=265598,
    symbol="AAPL",
    side="BOT",
    quantity=Decimal("3"),
    price=Decimal("190.23"),
    executed_at=AT,
    exchange="NASDAQ",
)
COMMISSION = BrokerCommission(exec_id=EXECUTION.exec_id, commission=Decimal("1.00"), currency="USD", realized_pnl=None)

SAMPLES = [
    ContractSpec(symbol="ES", sec_type="FUT", exchange="CME", expiry="202612", strike=Decimal("5000.25"), con_id=None),
    AAPL,
    Quote(
        con_id=265598,
        symbol="AAPL",
        bid=Decimal("189.89"),
        ask=Decimal("189.90"),
        last=None,
        bid_size=Decimal("300"),
        ask_size=Decimal("2.5E+2"),
        last_size=None,
        volume=Decimal("461080"),
        close=Decimal("189.53"),
        high=None,
        low=Decimal("-0.5"),
        time=AT,
        market_data_type=3,
        received_at=AT + timedelta(milliseconds=3),
    ),
    Bar(
        time=AT,
        open=Decimal("1"),
        high=Decimal("2"),
        low=Decimal("0.5"),
        close=Decimal("1.5"),
        volume=None,
        wap=Decimal("1.25"),
        count=None,
    ),
    AccountValue(tag="NetLiquidation", value="1000000.00", currency="USD"),
    AccountSummary(
        account="DU1234567",
        values=(AccountValue(tag="NetLiquidation", value="1", currency="USD"), AccountValue("Cushion", "0.9", "")),
    ),
    PositionInfo(
        account="DU1234567", contract=ES, quantity=Decimal("-2"), average_cost=None, market_price=Decimal("NaN")
    ),
    PnLInfo(account="DU1234567", daily_pnl=Decimal("-1.03"), unrealized_pnl=None, realized_pnl=Decimal("0")),
    BrokerOrderRequest(
        contract=AAPL,
        account="DU1234567",
        action="BUY",
        quantity=Decimal("10"),
        order_type="STP LMT",
        tif="GTC",
        order_ref="my-strategy-0001",
        limit_price=Decimal("189.50"),
        stop_price=Decimal("189.00"),
        outside_rth=True,
        oca_group="oca-1",
        parent_broker_order_id=7,
        transmit=False,
    ),
    OrderPreview(
        commission=Decimal("1"),
        min_commission=None,
        max_commission=None,
        commission_currency="USD",
        init_margin_change=Decimal("1e300"),
        maint_margin_change=None,
        equity_with_loan_change=Decimal("-0.00000001"),
        init_margin_after=None,
        maint_margin_after=None,
        equity_with_loan_after=None,
        warning="margin",
    ),
    OrderAck(broker_order_id=2**40, perm_id=None, status="PreSubmitted", client_id=1),
    STATUS,
    BrokerOrderWithdrawn(order_ref="so-1", broker_order_id=8, client_id=1, at=AT),
    EXECUTION,
    COMMISSION,
    BrokerSnapshot(
        orders=(STATUS, STATUS), executions=(EXECUTION,), commissions=(COMMISSION,), taken_at=AT, session_started=AT
    ),
    AccountRisk(
        account="DU1234567",
        available_funds=Decimal("250000.55"),
        currency="USD",
        positions=((265598, Decimal("-3")),),
        net_liquidation=Decimal("500001.10"),
        cash=Decimal("-12.5"),
    ),
    BrokerConnectionChanged(connected=False, reason="connection lost"),
    BrokerHealth(
        state="connected",
        gateway="127.0.0.1:4002",
        client_id=1,
        server_version=178,
        accounts=("DU1234567", "DU7654321"),
        connected_since=AT,
        down_since=None,
        last_error="",
        reconnects=2,
        reconciled=True,
        stale_subscriptions=("AAPL",),
    ),
]


def _over_the_wire(value):
    # What channels-redis does to every message.
    return msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False)


def test_every_adapter_dataclass_has_a_sample():
    assert {type(s).__name__ for s in SAMPLES} == set(DATACLASSES)


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: type(v).__name__)
def test_round_trip_keeps_values_and_types(value):
    back = decode(_over_the_wire(encode(value)))
    # repr also tells Decimal('1.50') from Decimal('1.5') and from floats, and tuples from lists.
    assert repr(back) == repr(value)


def test_containers_and_other_time_zones_round_trip():
    value = [AAPL, None, (1, "x"), {"a": [Decimal("1.10")]}, datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))]
    back = decode(_over_the_wire(encode(value)))
    assert repr(back) == repr(value)
    assert back[4].utcoffset() == timedelta(hours=2)


def test_anything_outside_the_interface_is_refused():
    with pytest.raises(TypeError):
        encode(object())
    with pytest.raises(TypeError):
        encode({1, 2})
    with pytest.raises(ValueError):
        decode({"$": "Order", "v": {}})


def test_errors_keep_code_status_and_details():
    timeout = BrokerUnavailable("slow", code=ErrorCode.BROKER_TIMEOUT, details={"timeout_s": 10})
    back = decode_error(_over_the_wire(encode_error(timeout)))
    assert isinstance(back, BrokerUnavailable)
    assert (back.code, back.http_status, back.details, back.message) == (
        "broker_timeout",
        504,
        {"timeout_s": 10},
        "slow",
    )

    pacing = GatewayError(ErrorCode.PACING_VIOLATION, "wait", http_status=429, details={"retry_after_s": 12})
    back = decode_error(_over_the_wire(encode_error(pacing)))
    assert type(back) is GatewayError
    assert (back.code, back.http_status, back.details) == (ErrorCode.PACING_VIOLATION, 429, {"retry_after_s": 12})

    bug = decode_error(_over_the_wire(encode_error(KeyError("x"))))
    assert not isinstance(bug, GatewayError)  # a bug in the owner stays a 500, never a broker answer
