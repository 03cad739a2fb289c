"""The JSON shapes of the broker's entities (contracts, the account, the gateway's health).

REST, MCP and websockets render through these functions, so every door answers alike.
"""

from __future__ import annotations

from typing import Any, cast

from rest_framework import serializers

from brokers.adapter import AccountSummary, ContractInfo, PnLInfo, PositionInfo, as_dict
from ibkrgw.web.serializers import money_field


class ContractOutput(serializers.Serializer):
    con_id = serializers.IntegerField()
    symbol = serializers.CharField()
    sec_type = serializers.CharField()
    exchange = serializers.CharField()
    primary_exchange = serializers.CharField()
    currency = serializers.CharField()
    expiry = serializers.CharField()
    strike = serializers.DecimalField(
        max_digits=20, decimal_places=8, allow_null=True, coerce_to_string=True, normalize_output=True
    )
    right = serializers.CharField()
    multiplier = serializers.CharField()
    local_symbol = serializers.CharField()
    trading_class = serializers.CharField()
    long_name = serializers.CharField()
    min_tick = serializers.DecimalField(max_digits=20, decimal_places=10, allow_null=True, normalize_output=True)
    min_size = serializers.DecimalField(
        max_digits=20, decimal_places=10, allow_null=True, normalize_output=True, help_text="The smallest order size."
    )
    size_increment = serializers.DecimalField(
        max_digits=20, decimal_places=10, allow_null=True, normalize_output=True, help_text="Size steps."
    )
    time_zone = serializers.CharField()


KEY_ONLY = "Only with an API key or a signed-in operator."


class PartialOutput(serializers.Serializer):
    """Renders only the keys its dict has: health without credentials leaves its identifying fields out."""

    def to_representation(self, instance: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in super().to_representation(instance).items() if k in instance}


class MarketDataLinesOutput(serializers.Serializer):
    streams = serializers.IntegerField(
        help_text="Lines streams may hold: IB_MARKET_DATA_LINES less MARKET_DATA_LINES_RESERVED (kept for snapshots)."
    )
    in_use = serializers.IntegerField()
    waiting = serializers.IntegerField(help_text="Streams asked for while every line was in use: next in line.")
    elsewhere = serializers.IntegerField(
        help_text="Lines the deployment's other IB connections hold (IB counts per account); streams here get the rest."
    )


class GatewayStateOutput(PartialOutput):
    state = serializers.CharField(help_text="not_started, connecting, connected, degraded, reconnecting, stopped")
    address = serializers.CharField(required=False, help_text=KEY_ONLY)
    connected = serializers.BooleanField()
    server_version = serializers.IntegerField(allow_null=True, required=False, help_text=KEY_ONLY)
    client_id = serializers.IntegerField(allow_null=True, required=False, help_text=KEY_ONLY)
    accounts = serializers.ListField(child=serializers.CharField(), required=False, help_text=KEY_ONLY)
    connected_since = serializers.DateTimeField(allow_null=True)
    down_since = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField(allow_blank=True, required=False, help_text=KEY_ONLY)
    reconnects = serializers.IntegerField()
    down_reason = serializers.CharField(
        allow_blank=True,
        help_text="Why the gateway is down: refused (not running/restarting), login_pending (waiting for login or "
        "two-factor), client_id_in_use, connection_lost, gateway_lost_ib_servers; empty when connected.",
    )
    reconciled = serializers.BooleanField()
    owner = serializers.ChoiceField(
        choices=["this_process", "another_process"],
        help_text="With several web processes, whether this one holds the IB connection.",
    )
    lease_holder = serializers.CharField(
        required=False,
        allow_null=True,
        help_text="host:pid:id of the process holding the IB connection lease. " + KEY_ONLY,
    )
    stale_subscriptions = serializers.ListField(child=serializers.CharField(), required=False, help_text=KEY_ONLY)
    market_data_lines = MarketDataLinesOutput()


class DatabaseStateOutput(PartialOutput):
    ok = serializers.BooleanField()
    detail = serializers.CharField(required=False, help_text=KEY_ONLY)
    vendor = serializers.CharField()


class HaltStateOutput(PartialOutput):
    state = serializers.ChoiceField(
        choices=["cancelling", "done"], help_text="done once the broker reports no working order"
    )
    working_orders = serializers.IntegerField(
        allow_null=True, help_text="orders the broker still reports as working (null: not checked yet)"
    )
    checked_at = serializers.DateTimeField(allow_null=True)
    error = serializers.CharField(allow_blank=True, required=False, help_text=KEY_ONLY)


class LedgerWatchOutput(PartialOutput):
    intact = serializers.BooleanField(
        help_text="No problem found by the last complete pass nor so far by this one (see problems)."
    )
    passes = serializers.IntegerField(help_text="Complete passes over the seals and every ledger row since start.")
    checked_to_seq = serializers.IntegerField(help_text="The seal seq the current pass has verified up to.")
    last_pass_at = serializers.DateTimeField(allow_null=True, help_text="When the last pass ended (UTC).")
    problems = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text=KEY_ONLY + " What the last complete pass and this one found (the first 20), in audit_verify's "
        "words: a row that differs from its seal and how, a row gone, a row without a seal, a broken seal chain.",
    )
    problem_count = serializers.IntegerField(help_text="How many problems in all (counted up to 1000 per pass).")


class LedgerGuardOutput(PartialOutput):
    guarded = serializers.BooleanField(
        help_text="Every append-only trigger of the ledger is in place: raw SQL cannot change or remove a row."
    )
    missing_triggers = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text=KEY_ONLY + " <table>.<trigger> of each trigger dropped since the last migrate, with ' (disabled)' "
        "or ' (altered)' for one there but not firing as written (audit_verify then tells whether anything was "
        "changed through the gap).",
    )
    watch = LedgerWatchOutput(
        allow_null=True,
        help_text="The seals re-verified a slice at a time (LEDGER_WATCH_ROWS every LEDGER_WATCH_EVERY_S), by "
        "the process that owns the IB connection; null in other processes or with the watch off.",
    )


class HealthOutput(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=["ok", "degraded"],
        help_text="ok: the gateway is connected, the database answers and the ledger is guarded and intact "
        "(ledger.guarded, ledger.watch.intact).",
    )
    gateway = GatewayStateOutput()
    simulated_gateway = serializers.BooleanField()
    trading_mode = serializers.ChoiceField(choices=["paper", "live"])
    orders_enabled = serializers.BooleanField()
    trading_halted = serializers.BooleanField(allow_null=True)
    halt = HaltStateOutput(allow_null=True, required=False, help_text="while halted: the global cancel's progress")
    reconciliation = serializers.ChoiceField(choices=["pending", "done"])
    database = DatabaseStateOutput()
    ledger = LedgerGuardOutput(allow_null=True, required=False, help_text="null: the database could not be asked")


class AccountValueOutput(serializers.Serializer):
    tag = serializers.CharField()
    value = serializers.CharField()
    currency = serializers.CharField(allow_blank=True)


class AccountSummaryOutput(serializers.Serializer):
    account = serializers.CharField()
    values = AccountValueOutput(many=True)


class PositionOutput(serializers.Serializer):
    account = serializers.CharField()
    contract = ContractOutput()
    quantity = money_field()
    average_cost = money_field()
    market_price = money_field()
    market_value = money_field()
    unrealized_pnl = money_field()
    realized_pnl = money_field()


class PnLOutput(serializers.Serializer):
    account = serializers.CharField()
    daily_pnl = money_field()
    unrealized_pnl = money_field()
    realized_pnl = money_field()


def contracts_payload(contracts: list[ContractInfo]) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], ContractOutput([as_dict(c) for c in contracts], many=True).data)


def health_payload(health: dict[str, Any]) -> dict[str, Any]:
    return HealthOutput(health).data


def account_summary_payload(summary: AccountSummary) -> dict[str, Any]:
    return AccountSummaryOutput({"account": summary.account, "values": [as_dict(v) for v in summary.values]}).data


def positions_payload(positions: list[PositionInfo]) -> list[dict[str, Any]]:
    rows = [{**as_dict(p), "contract": as_dict(p.contract)} for p in positions]
    return cast(list[dict[str, Any]], PositionOutput(rows, many=True).data)


def pnl_payload(pnl: PnLInfo) -> dict[str, Any]:
    return PnLOutput(as_dict(pnl)).data
