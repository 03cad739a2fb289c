"""The pre-trade gates. Each returns None or raises `GateBlocked` with its own code.

The configuration gate runs at start-up (brokers/checks.py); idempotency is enforced by the
database (orders/services/trading.py). What is here runs for every order, from every door, in the
one sequence of orders/services/checks.py: validation -> account mode -> risk -> arming.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from brokers.adapter import AccountRisk, ContractInfo, OrderPreview, Quote
from ibkrgw.errors import ErrorCode, GatewayError
from orders.types import OrderRequest

INTEGER_QUANTITY_SEC_TYPES = {"FUT", "OPT", "FOP", "BOND"}
PAPER_ACCOUNT_PREFIXES = ("DU", "DF")


class GateBlocked(GatewayError):
    def __init__(
        self, gate: str, code: ErrorCode, message: str, *, http_status: int = 422, details: dict | None = None
    ) -> None:
        super().__init__(code, message, http_status=http_status, details={"gate": gate, **(details or {})})
        self.gate = gate


def plain(value: Decimal) -> str:
    """A number as a person writes it in a message: 175, not 175.00000000 (requests carry 8 places)."""
    return format(value.normalize(), "f")


def invalid(message: str, **details) -> GateBlocked:
    return GateBlocked("validation", ErrorCode.INVALID_ORDER, message, details=details)


# -- 2. validation ---------------------------------------------------------------------------
def gate_order_shape(request: OrderRequest) -> None:
    """Prices required and forbidden per order type, TIF rules, quantity. No broker call."""
    t, tif = request.order_type, request.tif
    needs_limit = t in ("LMT", "STP_LMT", "LOC", "TRAIL_LIMIT")
    needs_stop = t in ("STP", "STP_LMT")
    if request.quantity <= 0:
        raise invalid("quantity must be positive.", field="quantity")
    if needs_limit and request.limit_price is None:
        raise invalid(f"{t} orders need limit_price.", field="limit_price")
    if not needs_limit and request.limit_price is not None:
        raise invalid(f"{t} orders take no limit_price.", field="limit_price")
    if needs_stop and request.stop_price is None:
        raise invalid(f"{t} orders need stop_price.", field="stop_price")
    if not needs_stop and t not in ("TRAIL", "TRAIL_LIMIT") and request.stop_price is not None:
        raise invalid(f"{t} orders take no stop_price.", field="stop_price")
    trailing = t in ("TRAIL", "TRAIL_LIMIT")
    has_amount, has_percent = request.trail_amount is not None, request.trail_percent is not None
    if trailing and has_amount == has_percent:
        raise invalid(f"{t} orders need exactly one of trail_amount or trail_percent.", field="trail_amount")
    if not trailing and (has_amount or has_percent):
        raise invalid(f"{t} orders take no trail_amount/trail_percent.", field="trail_amount")
    for name in ("limit_price", "stop_price", "trail_amount", "trail_percent"):
        value = getattr(request, name)
        if value is not None and value <= 0:
            raise invalid(f"{name} must be positive.", field=name)
    if request.trail_percent is not None and request.trail_percent >= 100:
        raise invalid("trail_percent must be below 100.", field="trail_percent")
    if t in ("MOC", "LOC") and tif != "DAY":
        raise invalid(f"{t} orders must have tif DAY.", field="tif")
    if tif == "OPG" and t not in ("MKT", "LMT"):
        raise invalid("tif OPG is only for MKT and LMT orders (market/limit on open).", field="tif")
    gate_whole_quantity(request, request.sec_type)
    if (
        request.sec_type in ("OPT", "FOP")
        and not request.con_id
        and not (request.expiry and request.strike and request.right)
    ):
        raise invalid("Options need expiry, strike and right (or con_id).", field="expiry")


def gate_whole_quantity(request: OrderRequest, sec_type: str) -> None:
    """Futures, options and bonds trade in whole contracts. Checked against the request's sec_type and
    again against the resolved contract's, which a request naming only a con_id does not state."""
    if sec_type in INTEGER_QUANTITY_SEC_TYPES and request.quantity != request.quantity.to_integral_value():
        raise invalid(f"{sec_type} quantities must be whole numbers.", field="quantity")


def gate_size_rules(request: OrderRequest, contract: ContractInfo) -> None:
    """The broker's size rules for the contract, where it reports them: the smallest order and the step
    between sizes (whole shares unless the account may trade fractions)."""
    quantity = request.quantity
    if contract.min_size is not None and quantity < contract.min_size:
        raise invalid(
            f"{contract.symbol} orders are at least {plain(contract.min_size)}.",
            field="quantity",
            min_size=plain(contract.min_size),
        )
    if contract.size_increment is not None and quantity % contract.size_increment != 0:
        raise invalid(
            f"{contract.symbol} order sizes go in steps of {plain(contract.size_increment)}.",
            field="quantity",
            size_increment=plain(contract.size_increment),
        )


def gate_contract_matches(request: OrderRequest, contract: ContractInfo) -> None:
    """A con_id names the contract alone; a symbol given beside it must be that contract's, or the order would
    trade something other than what its sender read."""
    if request.con_id and request.symbol and request.symbol.upper() != contract.symbol.upper():
        raise invalid(
            f"symbol {request.symbol} does not match con_id {request.con_id}, which is {contract.symbol}.",
            field="symbol",
            con_id_symbol=contract.symbol,
        )


def gate_bracket_approval(request: OrderRequest, *, approval_required: bool) -> None:
    if request.is_bracket and approval_required and orders_armed():
        raise invalid(
            "Brackets cannot wait for approval yet: place the entry alone, or ask an operator.", field="take_profit"
        )


BRACKET_ENTRY_TYPES = ("MKT", "LMT")
BRACKET_SUFFIX_LEN = 3  # children are "<client_order_id>.tp" and "<client_order_id>.sl"


def gate_bracket_shape(request: OrderRequest, reference: Decimal | None) -> None:
    """A bracket's exits must sit on the right side of the entry: a buy takes profit above and stops
    out below it (a sell the other way round)."""
    if not request.is_bracket:
        return
    if request.order_type not in BRACKET_ENTRY_TYPES or request.tif not in ("DAY", "GTC"):
        raise invalid("A bracket's entry must be a MKT or LMT order with tif DAY or GTC.", field="order_type")
    if len(request.client_order_id) > 64 - BRACKET_SUFFIX_LEN:
        raise invalid("A bracket's client_order_id may have at most 61 characters.", field="client_order_id")
    for name in ("take_profit", "stop_loss"):
        value = getattr(request, name)
        if value is not None and value <= 0:
            raise invalid(f"{name} must be positive.", field=name)
    entry = request.limit_price or reference
    if entry is None:
        return
    buying = request.action in ("BUY", "BUY_TO_COVER")
    if request.take_profit is not None and (request.take_profit <= entry if buying else request.take_profit >= entry):
        raise invalid(
            f"take_profit must be {'above' if buying else 'below'} the entry price {plain(entry)}.", field="take_profit"
        )
    if request.stop_loss is not None and (request.stop_loss >= entry if buying else request.stop_loss <= entry):
        raise invalid(
            f"stop_loss must be {'below' if buying else 'above'} the entry price {plain(entry)}.", field="stop_loss"
        )


def gate_tick_size(request: OrderRequest, contract: ContractInfo) -> None:
    tick = contract.min_tick
    if not tick or tick <= 0:
        return
    for name in ("limit_price", "stop_price", "trail_amount", "take_profit", "stop_loss"):
        value = getattr(request, name)
        if value is not None and value % tick != 0:
            raise GateBlocked(
                "validation",
                ErrorCode.INVALID_TICK_SIZE,
                f"{name} {plain(value)} is not a multiple of the minimum tick {plain(tick)}.",
                details={"field": name, "min_tick": str(tick.normalize())},
            )


def gate_account_managed(account: str, managed: tuple[str, ...]) -> None:
    if account not in managed:
        raise GateBlocked(
            "validation",
            ErrorCode.ACCOUNT_NOT_MANAGED,
            f"Account {account} is not managed by the connected gateway.",
            details={"account": account, "managed": list(managed)},
        )


def gate_trading_hours(request: OrderRequest, contract: ContractInfo, now: datetime) -> None:
    """Refuse orders that cannot execute at this moment of the exchange's day.

    Market orders for the day outside regular hours (without outside_rth), opening orders once the
    market has opened, and market/limit-on-close orders after the exchange's cut-off.
    """
    if settings.TRADING_HOURS != "exchange":
        return
    from brokers.hours import MOC_CUTOFF, market_state

    state = market_state(contract, now)
    if state is None:
        return
    details = {
        "calendar": state.calendar,
        "session_open": state.session_open.isoformat(),
        "session_close": state.session_close.isoformat(),
    }
    in_session = state.open_now and state.session_open <= now < state.session_close
    if request.order_type == "MKT" and request.tif == "DAY" and not request.outside_rth and not in_session:
        raise GateBlocked(
            "validation",
            ErrorCode.MARKET_CLOSED,
            "The market is closed: a MKT DAY order would not execute now. Set outside_rth, use a "
            "limit order, or wait for the open.",
            details=details,
        )
    if request.tif == "OPG" and in_session:
        raise GateBlocked(
            "validation",
            ErrorCode.MARKET_CLOSED,
            "Opening orders (tif OPG) are accepted only before the open.",
            details=details,
        )
    if request.order_type in ("MOC", "LOC") and (not in_session or now >= state.session_close - MOC_CUTOFF):
        raise GateBlocked(
            "validation",
            ErrorCode.MARKET_CLOSED,
            f"{request.order_type} orders must reach the exchange at least "
            f"{int(MOC_CUTOFF.total_seconds() // 60)} minutes before today's close.",
            details=details,
        )


# -- 3. account mode -------------------------------------------------------------------------
def gate_account_mode(account: str) -> None:
    paper_account = account.upper().startswith(PAPER_ACCOUNT_PREFIXES)
    if (settings.TRADING_MODE == "paper") != paper_account:
        raise GateBlocked(
            "account_mode",
            ErrorCode.ACCOUNT_MODE_MISMATCH,
            f"TRADING_MODE={settings.TRADING_MODE} may not trade {'a paper' if paper_account else 'a live'} "
            f"account ({account}).",
            http_status=403,
            details={"account": account, "trading_mode": settings.TRADING_MODE},
        )


# -- 4. risk ---------------------------------------------------------------------------------
def reference_price(quote: Quote | None) -> Decimal | None:
    """The price the collar and notional limits compare against: last trade, else the mid."""
    if quote is None:
        return None
    if quote.last:
        return quote.last
    if quote.bid and quote.ask:
        return (quote.bid + quote.ask) / 2
    return quote.close


def quote_is_fresh(quote: Quote | None) -> bool:
    if quote is None:
        return False
    stamp = quote.time or quote.received_at
    if stamp is None:
        return False
    return datetime.now(UTC) - stamp <= timedelta(seconds=settings.QUOTE_STALE_AFTER_S)


def gate_kill_switch(halted: bool) -> None:
    if halted:
        raise GateBlocked(
            "risk",
            ErrorCode.TRADING_HALTED,
            "Trading is halted (kill switch). An admin user must resume trading.",
            http_status=423,
        )


def gate_api_key_usable(usable: bool) -> None:
    """An order placed with an API key is admitted only while the key is usable: one that waited for its turn
    while the key was revoked (or expired) is refused, so nothing is placed after a revocation has answered."""
    if not usable:
        raise GateBlocked(
            "api_key", ErrorCode.NOT_AUTHENTICATED, "The API key was revoked or has expired.", http_status=401
        )


def gate_max_quantity(request: OrderRequest) -> None:
    if request.quantity > settings.RISK_MAX_ORDER_QUANTITY:
        raise GateBlocked(
            "risk",
            ErrorCode.RISK_MAX_QUANTITY,
            f"quantity {plain(request.quantity)} exceeds RISK_MAX_ORDER_QUANTITY {settings.RISK_MAX_ORDER_QUANTITY}.",
            details={"limit": str(settings.RISK_MAX_ORDER_QUANTITY)},
        )


def gate_orders_per_minute(orders_last_minute: int, adding: int = 1) -> None:
    """`adding` orders (a bracket adds its legs) must fit under the limit with the last minute's."""
    if orders_last_minute + adding > settings.RISK_MAX_ORDERS_PER_MINUTE:
        raise GateBlocked(
            "risk",
            ErrorCode.RISK_RATE_LIMIT,
            f"{orders_last_minute} orders in the last minute; the limit is {settings.RISK_MAX_ORDERS_PER_MINUTE}.",
            http_status=429,
            details={"limit": settings.RISK_MAX_ORDERS_PER_MINUTE, "retry_after_s": 60},
        )


def gate_duplicate(duplicate_recent: bool) -> None:
    if duplicate_recent:
        raise GateBlocked(
            "risk",
            ErrorCode.POSSIBLE_DUPLICATE,
            f"An identical order was placed in the last {settings.RISK_DUPLICATE_WINDOW_S}s; "
            "send a client_order_id to place it on purpose.",
            http_status=409,
        )


def gate_fresh_quote(quote: Quote | None) -> Decimal:
    """The reference price, or a block when there is no recent quote to check prices against."""
    ref = reference_price(quote)
    if not quote_is_fresh(quote) or ref is None:
        raise GateBlocked(
            "risk",
            ErrorCode.RISK_STALE_MARKET_DATA,
            "No recent quote for this contract, so the price checks cannot run.",
            details={"stale_after_s": settings.QUOTE_STALE_AFTER_S},
        )
    return ref


def contract_multiplier(contract: ContractInfo) -> Decimal:
    try:
        return Decimal(contract.multiplier) if contract.multiplier else Decimal(1)
    except ArithmeticError:
        return Decimal(1)


def order_notional(request: OrderRequest, contract: ContractInfo, ref: Decimal) -> Decimal:
    """quantity x price x multiplier; a bracket counts at its worst leg (the highest price it names)."""
    prices = [request.limit_price or request.stop_price or ref]
    prices += [p for p in (request.take_profit, request.stop_loss) if p is not None]
    return request.quantity * max(prices) * contract_multiplier(contract)


def gate_notional(request: OrderRequest, contract: ContractInfo, ref: Decimal) -> None:
    notional = order_notional(request, contract, ref)
    if notional > settings.RISK_MAX_ORDER_NOTIONAL:
        raise GateBlocked(
            "risk",
            ErrorCode.RISK_MAX_NOTIONAL,
            f"notional {notional:.2f} exceeds RISK_MAX_ORDER_NOTIONAL {settings.RISK_MAX_ORDER_NOTIONAL}.",
            details={
                "notional": str(notional.quantize(Decimal("0.01"))),
                "limit": str(settings.RISK_MAX_ORDER_NOTIONAL),
            },
        )


COLLARED_PRICES = ("limit_price", "stop_price", "take_profit", "stop_loss")


def gate_collar(request: OrderRequest, ref: Decimal) -> None:
    """Every price the order (and each leg of a bracket) names stays within the collar around the market."""
    for name in COLLARED_PRICES:
        price = getattr(request, name)
        if price is None:
            continue
        deviation = abs(price - ref) / ref * 100
        if deviation > settings.RISK_PRICE_COLLAR_PCT:
            raise GateBlocked(
                "risk",
                ErrorCode.RISK_PRICE_COLLAR,
                f"{name} {plain(price)} is {deviation:.2f}% from the reference price {plain(ref)}; the collar is "
                f"{settings.RISK_PRICE_COLLAR_PCT}%.",
                details={
                    "field": name,
                    "reference_price": str(ref),
                    "deviation_pct": str(deviation.quantize(Decimal("0.01"))),
                },
            )


# Initial margin as a share of notional, per security type: Reg-T style estimates used to check an
# order against the funds the account reports as available, without a what-if round trip per order.
INITIAL_MARGIN_RATE = {
    "STK": Decimal("0.5"),
    "FUT": Decimal("0.1"),
    "FOP": Decimal("1"),
    "OPT": Decimal("1"),
    "CASH": Decimal("0.05"),
    "BOND": Decimal("0.1"),
    "CFD": Decimal("0.2"),
}


def margin_estimate(request: OrderRequest, contract: ContractInfo, ref: Decimal, position: Decimal) -> Decimal:
    """Initial margin the order adds: only the part that grows the position (closing costs nothing)."""
    signed = request.quantity if request.action in ("BUY", "BUY_TO_COVER") else -request.quantity
    growth = max(Decimal(0), abs(position + signed) - abs(position))
    price = request.limit_price or request.stop_price or ref
    rate = INITIAL_MARGIN_RATE.get(contract.sec_type, Decimal(1))
    return growth * price * contract_multiplier(contract) * rate


def gate_buying_power_estimate(
    request: OrderRequest, contract: ContractInfo, ref: Decimal, risk: AccountRisk | None
) -> None:
    """Block an order whose estimated initial margin exceeds the account's available funds."""
    if risk is None or risk.available_funds is None:
        return
    if risk.currency and contract.currency and risk.currency != contract.currency:
        return  # no FX conversion here; the broker's own margin check still applies
    needed = margin_estimate(request, contract, ref, risk.position(contract.con_id))
    if needed > risk.available_funds:
        raise GateBlocked(
            "risk",
            ErrorCode.RISK_BUYING_POWER,
            f"The order needs about {needed:.2f} {risk.currency} of initial margin; the account has "
            f"{risk.available_funds:.2f} available.",
            details={
                "margin_estimate": str(needed.quantize(Decimal("0.01"))),
                "available_funds": str(risk.available_funds),
            },
        )


def gate_buying_power(preview: OrderPreview | None) -> None:
    if preview is None or preview.init_margin_after is None or preview.equity_with_loan_after is None:
        return
    if preview.init_margin_after > preview.equity_with_loan_after:
        raise GateBlocked(
            "risk",
            ErrorCode.RISK_BUYING_POWER,
            "The order's initial margin would exceed the account's equity with loan.",
            details={
                "init_margin_after": str(preview.init_margin_after),
                "equity_with_loan_after": str(preview.equity_with_loan_after),
            },
        )


# -- 5. arming -------------------------------------------------------------------------------
def orders_armed() -> bool:
    """False: the order is recorded as `simulated` and nothing reaches the gateway."""
    return settings.ORDERS_ENABLED


def gate_live_override() -> None:
    """Live orders need the override file to exist now, not just at start-up."""
    if settings.TRADING_MODE != "live":
        return
    path = settings.LIVE_TRADING_OVERRIDE_FILE
    if not path or not os.path.exists(path):
        raise GateBlocked(
            "arming",
            ErrorCode.LIVE_OVERRIDE_MISSING,
            "Live orders need LIVE_TRADING_OVERRIDE_FILE to exist; it does not.",
            http_status=403,
            details={"path": path or None},
        )


def recent_window(seconds: int):
    return timezone.now() - timedelta(seconds=seconds)
