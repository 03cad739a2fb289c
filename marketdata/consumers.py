"""Websocket door for quotes: `/ws/quotes/`.

Client -> server:
    {"action": "subscribe", "symbols": ["AAPL", ...]}           and/or "contracts": [{contract spec as REST}]
    {"action": "unsubscribe", "symbols": [...], "contracts": [...]}
    {"action": "ping"}
Server -> client:
    {"type": "subscribed" | "unsubscribed", "contracts": [ContractOutput, ...]}
    {"type": "quote", "symbol", "con_id", "bid", "ask", "last", "bid_size", "ask_size", "volume",
     "time", "age_ms", "market_data_type", "stale"}
    {"type": "error", "code", "message", "details"}   (the socket stays open)
    {"type": "pong"}
A subscribe that names several contracts subscribes those that resolve and sends one error frame
per one that does not (contract_not_found, contract_ambiguous, ...), or that finds no free
market-data line to stream on (market_data_lines), then the acknowledgement. Each contract a
subscribe or unsubscribe names counts as one read of the caller's API_READ_RATE, the window REST's
reads count in (lookups cost the broker messages): over it, the message is answered with one
`throttled` error frame (`retry_after_s`) and nothing of it is done.
"""

from __future__ import annotations

from typing import Any, TypedDict

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from rest_framework import serializers

from brokers.adapter import ContractInfo, ContractSpec
from brokers.payloads import contracts_payload
from ibkrgw.auth import read_budget_spend, read_ident
from ibkrgw.errors import GatewayError
from ibkrgw.web.fields import AsciiTrimmedCharField
from ibkrgw.web.serializers import StrictBodyMixin
from ibkrgw.web.ws import LatestOutbox, StreamConsumer, error_frame, invalid, shared_channel_layer
from marketdata.api import ContractQueryInput
from marketdata.groups import QuoteMessage, hubs, quote_group_name
from marketdata.services import contracts_resolve_each, no_line_error, streams_without_line

MAX_CONTRACTS_PER_MESSAGE = 100
MAX_CONTRACTS_PER_CLIENT = 500


class ContractsFrame(TypedDict):
    type: str  # "subscribed" or "unsubscribed"
    contracts: list[dict[str, Any]]


class QuoteSubscriptionInput(StrictBodyMixin, serializers.Serializer):
    action = serializers.ChoiceField(choices=["subscribe", "unsubscribe"])
    symbols = serializers.ListField(
        child=AsciiTrimmedCharField(max_length=32), required=False, max_length=MAX_CONTRACTS_PER_MESSAGE
    )
    contracts = serializers.ListField(
        child=serializers.DictField(), required=False, max_length=MAX_CONTRACTS_PER_MESSAGE
    )

    def validate(self, attrs):
        symbols, contracts = attrs.get("symbols", []), attrs.get("contracts", [])
        if not symbols and not contracts:
            raise serializers.ValidationError({"symbols": ['Give "symbols" or "contracts".']})
        if len(symbols) + len(contracts) > MAX_CONTRACTS_PER_MESSAGE:
            raise serializers.ValidationError(
                {"symbols": [f"At most {MAX_CONTRACTS_PER_MESSAGE} contracts per message."]}
            )
        specs: list[ContractSpec] = []
        errors: dict[str, Any] = {}
        queries = [{"symbol": s} for s in symbols] + contracts
        for index, query in enumerate(queries):
            spec_input = ContractQueryInput(data=query)
            if spec_input.is_valid():
                specs.append(spec_input.to_spec())
            else:
                errors[str(index)] = spec_input.errors
        if errors:
            raise serializers.ValidationError({"contracts": errors})
        attrs["queries"], attrs["specs"] = queries, specs
        return attrs


def _parse(message: dict[str, Any]) -> QuoteSubscriptionInput:
    data = QuoteSubscriptionInput(data=message)
    if not data.is_valid():
        raise invalid("The message is not valid.", fields=data.errors)
    return data


async def _resolve(data: QuoteSubscriptionInput) -> list[tuple[dict, ContractInfo | GatewayError]]:
    # Database and broker I/O: off the event loop, and not in the one thread-sensitive executor
    # that every other sync call of the process shares.
    results = await database_sync_to_async(contracts_resolve_each, thread_sensitive=False)(
        specs=data.validated_data["specs"]
    )
    return list(zip(data.validated_data["queries"], results, strict=True))


class QuoteStreamConsumer(StreamConsumer):
    stream = "quotes"
    actions = ("subscribe", "unsubscribe", "ping")

    async def opened(self) -> None:
        self.hub = hubs.get()
        self.watching: dict[int, ContractInfo] = {}
        self.fingerprints: dict[int, str] = {}
        self.outbox: LatestOutbox[int, str] = LatestOutbox(
            self._send_quote, max_send_s=self.max_send_s, on_stalled=self.drop_slow_client
        )

    async def closed(self) -> None:
        await self.outbox.aclose()
        for con_id in list(self.watching):
            await self._unwatch(con_id)

    async def action_subscribe(self, message: dict[str, Any]) -> None:
        resolved = await self._resolved(_parse(message))
        new = {c.con_id: c for c in resolved if c.con_id not in self.watching}
        if len(self.watching) + len(new) > MAX_CONTRACTS_PER_CLIENT:
            raise invalid(f"At most {MAX_CONTRACTS_PER_CLIENT} contracts per connection.", watching=len(self.watching))
        # Beyond the market-data lines for streams: refused by name (the socket stays open), not queued silently.
        for contract in await sync_to_async(streams_without_line, thread_sensitive=False)(list(new.values())):
            error = no_line_error(contract)
            await self.send_frame(error_frame(error.code, error.message, error.details))
            del new[contract.con_id]
            resolved.remove(contract)
        for contract in new.values():
            self.watching[contract.con_id] = contract
            if shared_channel_layer():
                await self.channel_layer.group_add(quote_group_name(contract.con_id), self.channel_name)
        # Acknowledge before the first quote (watch() may offer the current one at once).
        ack: ContractsFrame = {"type": "subscribed", "contracts": _contracts_json(resolved)}
        await self.send_frame(ack)
        for contract in new.values():
            self.hub.watch(self, contract)

    async def action_unsubscribe(self, message: dict[str, Any]) -> None:
        resolved = await self._resolved(_parse(message))
        gone = [c for c in resolved if c.con_id in self.watching]
        for contract in gone:
            await self._unwatch(contract.con_id)
        ack: ContractsFrame = {"type": "unsubscribed", "contracts": _contracts_json(gone)}
        await self.send_frame(ack)

    async def _resolved(self, data: QuoteSubscriptionInput) -> list[ContractInfo]:
        """The contracts that resolved; an error frame for each that did not."""
        key = self.scope.get("api_key")
        caller = read_ident(key=key, user=None if key else self.scope["user"])
        read_budget_spend(caller, len(data.validated_data["specs"]))
        resolved: list[ContractInfo] = []
        for query, result in await _resolve(data):
            if isinstance(result, GatewayError):
                await self.send_frame(error_frame(result.code, result.message, {**result.details, "query": query}))
            elif result.con_id not in {c.con_id for c in resolved}:
                resolved.append(result)
        return resolved

    async def _unwatch(self, con_id: int) -> None:
        self.watching.pop(con_id, None)
        self.fingerprints.pop(con_id, None)
        self.outbox.discard(con_id)
        self.hub.unwatch(self, con_id)
        if shared_channel_layer():
            await self.channel_layer.group_discard(quote_group_name(con_id), self.channel_name)

    # -- delivery -------------------------------------------------------------------------------
    def offer_quote(self, message: QuoteMessage) -> None:
        """From the hub (in-memory layer) or the channel layer; never blocks."""
        con_id = message["con_id"]
        if con_id not in self.watching or self.fingerprints.get(con_id) == message["fingerprint"]:
            return
        self.fingerprints[con_id] = message["fingerprint"]
        self.outbox.offer(con_id, message["text"])

    async def quote_update(self, message: QuoteMessage) -> None:
        """Channel layer handler (group `quotes.<conId>`, Redis only)."""
        if self._open:
            self.offer_quote(message)

    async def _send_quote(self, con_id: int, text: str) -> None:
        await self.send(text_data=text)


def _contracts_json(contracts: list[ContractInfo]) -> list[dict[str, Any]]:
    return contracts_payload(contracts)
