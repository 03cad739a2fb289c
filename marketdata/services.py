"""Market data: contract resolution (cached), quotes and historical bars."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.chain import canonical_json
from audit.seal import mac_valid, seal_keys, seal_mac
from audit.stored import UNREADABLE_ERRORS
from brokers import runtime
from brokers.adapter import Bar, ContractInfo, ContractSpec, Quote
from ibkrgw.errors import ErrorCode, GatewayError
from marketdata.models import CachedContract, ContractLookup

logger = logging.getLogger(__name__)
LOOKUP_TTL = timedelta(hours=12)
MAX_CANDIDATES = 50
DEFAULT_EXCHANGE = {"STK": "SMART", "OPT": "SMART", "CASH": "IDEALPRO", "FUND": "FUNDSERV"}
STREAM_FIRST_TICK_WAIT_S = 2.0
T = TypeVar("T")
REST_HOLD_S = 300.0  # a REST `stream=true` subscription lives this long after its last use
_rest_holds: dict[int, float] = {}
_rest_lock = threading.Lock()


def _remembered_per_spec(fn: Callable[[ContractSpec], T]) -> Callable[[ContractSpec], T]:
    """Specs are frozen and every order and quote asks this of one: remember the answers. Not for a
    spec with a strike, where equal Decimals ("1.0", "1.00") would share one entry but not one key."""
    remembered = functools.lru_cache(maxsize=4096)(fn)

    @functools.wraps(fn)
    def answer(spec: ContractSpec) -> T:
        return remembered(spec) if spec.strike is None else fn(spec)

    return answer


@_remembered_per_spec
def spec_normalize(spec: ContractSpec) -> ContractSpec:
    """Fill the defaults a person would assume (SMART for stocks, EUR.USD style FX symbols)."""
    sec_type = (spec.sec_type or "STK").upper()
    symbol, currency = spec.symbol.strip().upper(), spec.currency.strip().upper()
    if sec_type == "CASH" and "." in symbol:
        symbol, _, pair_currency = symbol.partition(".")
        currency = currency or pair_currency
    exchange = spec.exchange.strip().upper() or DEFAULT_EXCHANGE.get(sec_type, "")
    return replace(
        spec,
        symbol=symbol,
        sec_type=sec_type,
        exchange=exchange,
        currency=currency,
        right=spec.right.strip().upper()[:1],
        expiry=spec.expiry.strip().replace("-", ""),
    )


@_remembered_per_spec
def _lookup_key(spec: ContractSpec) -> str:
    payload = json.dumps(asdict(spec), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _info_to_json(info: ContractInfo) -> dict:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in asdict(info).items()}


def _info_from_json(data: dict) -> ContractInfo:
    values = dict(data)
    for name in ("strike", "min_tick", "min_size", "size_increment"):
        values[name] = Decimal(values[name]) if values.get(name) not in (None, "") else None
    return ContractInfo(**values)


# Process-local copy of the database cache: resolving a known contract costs no query at all.
_memory: dict[str, tuple[float, list[ContractInfo]]] = {}


def contract_cache_clear() -> None:
    """Forget the process-local copy (the database cache stays)."""
    _memory.clear()


def _lookup_hash(key: str, contracts: list[dict]) -> str:
    payload = {"key": key, "contracts": sorted(contracts, key=lambda data: str(data.get("con_id")))}
    return hashlib.sha256(canonical_json(payload).encode("ascii")).hexdigest()


def _cached(key: str) -> list[ContractInfo] | None:
    hit = _memory.get(key)
    if hit is not None and time.monotonic() - hit[0] < LOOKUP_TTL.total_seconds():
        return hit[1]
    try:
        lookup = ContractLookup.objects.filter(key=key, resolved_at__gte=timezone.now() - LOOKUP_TTL).first()
        if lookup is None:
            return None
        stored = [c.data for c in lookup.contracts.all().order_by("expiry", "con_id")]
        trusted = mac_valid(_lookup_hash(key, stored), lookup.mac, seal_keys())
        infos = [_info_from_json(data) for data in stored] if trusted else []
        age_s = (timezone.now() - lookup.resolved_at).total_seconds()
    except UNREADABLE_ERRORS:  # not even what the gateway writes (text in a date column)
        trusted = False
    if not trusted:
        # Changed in the database since the gateway cached it (or cached under a seal key no longer
        # configured): the gates would trust its tick, size steps and multiplier. Ask the broker again.
        logger.warning("contract cache entry %s does not match its MAC or cannot be read: resolving it again", key)
        return None
    _memory[key] = (time.monotonic() - age_s, infos)
    return infos


def _store(key: str, spec: ContractSpec, infos: list[ContractInfo]) -> None:
    try:
        _write(key, spec, infos)
    except UNREADABLE_ERRORS:
        # A cached row holds a value the gateway never writes, so it cannot even be read to be updated: it is
        # only a cache, so drop the rows this lookup touches (without reading their values) and write afresh.
        ContractLookup.objects.filter(key=key).only("pk").delete()
        CachedContract.objects.filter(con_id__in=[info.con_id for info in infos]).only("pk").delete()
        _write(key, spec, infos)


def _write(key: str, spec: ContractSpec, infos: list[ContractInfo]) -> None:
    try:
        with transaction.atomic():
            rows = []
            datas = [_info_to_json(info) for info in infos]
            for info, data in zip(infos, datas, strict=True):
                row, _ = CachedContract.objects.update_or_create(
                    con_id=info.con_id,
                    defaults={
                        "symbol": info.symbol,
                        "sec_type": info.sec_type,
                        "exchange": info.exchange,
                        "currency": info.currency,
                        "expiry": info.expiry,
                        "data": data,
                        "updated_at": timezone.now(),
                    },
                )
                rows.append(row)
            lookup, _ = ContractLookup.objects.update_or_create(
                key=key,
                defaults={
                    "query": json.loads(json.dumps(asdict(spec), default=str)),
                    "resolved_at": timezone.now(),
                    "mac": seal_mac(_lookup_hash(key, datas), seal_keys()[0]),
                },
            )
            lookup.contracts.set(rows)
    except IntegrityError:
        pass  # another request cached the same lookup at the same moment


def contract_resolve(*, spec: ContractSpec, for_order: bool = False) -> list[ContractInfo]:
    """Every contract matching `spec` (cached). Raises 404 contract_not_found when none match.

    `for_order`: an order waits on the answer, so a request to the broker goes ahead of queued reads."""
    spec = spec_normalize(spec)
    if not spec.symbol and not spec.con_id:
        raise GatewayError(ErrorCode.INVALID_REQUEST, "Give a symbol or a con_id.", details={"fields": ["symbol"]})
    key = _lookup_key(spec)
    infos = _cached(key)
    if infos is None:
        infos = runtime.adapter().resolve_contracts(spec=spec, for_order=for_order)
        if infos:
            _store(key, spec, infos)
            _memory[key] = (time.monotonic(), infos)
    if not infos:
        raise GatewayError(
            ErrorCode.CONTRACT_NOT_FOUND,
            f"No contract matches {spec.symbol or spec.con_id}.",
            http_status=404,
            details={"query": _spec_json(spec)},
        )
    return sorted(infos, key=lambda i: (i.expiry, i.strike or 0, i.right, i.con_id))


def _spec_json(spec: ContractSpec) -> dict:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in asdict(spec).items() if v not in ("", None)}


def front_month(infos: list[ContractInfo]) -> ContractInfo | None:
    """Futures asked without expiry resolve to the nearest expiry that has not passed."""
    if not infos or any(i.sec_type != "FUT" for i in infos) or len({i.symbol for i in infos}) != 1:
        return None
    today = datetime.now(UTC).strftime("%Y%m%d")
    live = [i for i in infos if i.expiry[:8].ljust(8, "9") >= today]
    return min(live, key=lambda i: i.expiry) if live else None


def contract_search(*, spec: ContractSpec) -> list[ContractInfo]:
    """What `contracts/` answers: every match, except that futures asked without expiry give the front month."""
    infos = contract_resolve(spec=spec)
    if not spec.expiry:
        front = front_month(infos)
        if front is not None:
            return [front]
    return infos


def contract_resolve_one_memory(*, spec: ContractSpec) -> ContractInfo | None:
    """What `contract_resolve_one` answers, from this process's memory only (no database, no broker):
    None when that would need either, or when it would fail."""
    normalized = spec_normalize(spec)
    if not normalized.symbol and not normalized.con_id:
        return None
    hit = _memory.get(_lookup_key(normalized))
    if hit is None or time.monotonic() - hit[0] >= LOOKUP_TTL.total_seconds() or not hit[1]:
        return None
    infos = hit[1]
    if len(infos) == 1:
        return infos[0]
    return front_month(infos) if not spec.expiry else None


def contract_resolve_one(*, spec: ContractSpec, for_order: bool = False) -> ContractInfo:
    """Exactly one contract, or 404 contract_not_found / 409 contract_ambiguous with candidates."""
    infos = contract_resolve(spec=spec, for_order=for_order)
    if len(infos) == 1:
        return infos[0]
    if not spec.expiry:
        front = front_month(infos)
        if front is not None:
            return front
    raise GatewayError(
        ErrorCode.CONTRACT_AMBIGUOUS,
        f"{len(infos)} contracts match; add exchange, currency, expiry, strike or right, or give a con_id.",
        http_status=409,
        details={"candidates": [_info_to_json(i) for i in infos[:MAX_CANDIDATES]], "count": len(infos)},
    )


def quote_get(*, spec: ContractSpec, stream: bool = False) -> tuple[ContractInfo, Quote]:
    """A quote for one contract.

    Uses the streaming cache when the contract is already subscribed (by a websocket client or an
    earlier `stream=True` call), otherwise a one-off snapshot. `stream=True` keeps a subscription
    so later calls are answered from memory.
    """
    contract = contract_resolve_one(spec=spec)
    adapter = runtime.adapter()
    cached = adapter.quote_cached(con_id=contract.con_id)
    if cached is not None:
        return contract, cached
    if stream and not streams_without_line([contract]):  # without a free line: a snapshot, from the reserve
        rest_stream_hold(contract)
        deadline = time.monotonic() + STREAM_FIRST_TICK_WAIT_S
        while time.monotonic() < deadline:
            cached = adapter.quote_cached(con_id=contract.con_id)
            if cached is not None:
                return contract, cached
            time.sleep(0.005)
    return contract, adapter.quote_snapshot(contract=contract)


def bars_get(
    *, spec: ContractSpec, bar_size: str, duration: str, what_to_show: str, use_rth: bool
) -> tuple[ContractInfo, list[Bar]]:
    contract = contract_resolve_one(spec=spec)
    bars = runtime.adapter().bars(
        contract=contract, bar_size=bar_size, duration=duration, what_to_show=what_to_show, use_rth=use_rth
    )
    return contract, bars


def streams_without_line(contracts: list[ContractInfo]) -> list[ContractInfo]:
    """Those of `contracts` not streamed yet that would find no free market-data line now."""
    refused = set(runtime.adapter().quote_streams_without_line(con_ids=[c.con_id for c in contracts]))
    return [c for c in contracts if c.con_id in refused]


def no_line_error(contract: ContractInfo) -> GatewayError:
    return GatewayError(
        ErrorCode.MARKET_DATA_LINES,
        f"Every market-data line for streams is in use: {contract.symbol} cannot be streamed now. Stop watching "
        "another contract, or ask for a snapshot (a REST quote without stream=true).",
        http_status=429,
        details={"symbol": contract.symbol, "con_id": contract.con_id},
    )


def rest_stream_hold(contract: ContractInfo) -> None:
    """Keep a streaming subscription for REST callers; expire holds idle for REST_HOLD_S."""
    adapter = runtime.adapter()
    now = time.monotonic()
    with _rest_lock:
        for con_id, last_used in list(_rest_holds.items()):
            if now - last_used > REST_HOLD_S:
                del _rest_holds[con_id]
                adapter.quote_unsubscribe(con_id=con_id)
        if contract.con_id not in _rest_holds:
            adapter.quote_subscribe(contract=contract)
        _rest_holds[contract.con_id] = now


def rest_stream_holds_forget() -> None:
    """Forget the REST holds (their subscriptions went with the broker runtime that held them)."""
    with _rest_lock:
        _rest_holds.clear()


def contracts_resolve_each(*, specs: list[ContractSpec]) -> list[ContractInfo | GatewayError]:
    """Resolve each spec to exactly one contract; a failure is returned in its place, not raised.

    Does database and broker I/O: call it from a thread (never on an event loop).
    """
    results: list[ContractInfo | GatewayError] = []
    for spec in specs:
        try:
            results.append(contract_resolve_one(spec=spec))
        except GatewayError as exc:
            results.append(exc)
    return results
