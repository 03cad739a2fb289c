"""Broker connection state shared by every process of one deployment."""

from __future__ import annotations

from django.db import models


class BrokerLease(models.Model):
    """Who owns a shared resource (the IB connection) while several web processes run.

    Not part of the ledger: the row is updated in place on every renewal (see `brokers.scaleout.lease`).
    """

    name = models.CharField(max_length=64, primary_key=True)
    holder = models.CharField(max_length=200, blank=True, help_text="host:pid:uuid of the owning process")
    acquired_at = models.DateTimeField()
    renewed_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        verbose_name = "broker lease"

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder or 'nobody'} until {self.expires_at:%Y-%m-%d %H:%M:%S}"


class MarketDataLineUse(models.Model):
    """The market-data lines one IB connection of this deployment holds for streams, as it last said.

    IB counts lines per account, across every API client. Each process with a connection of its own
    (the web server, a separate `manage.py mcp`) reports here every few seconds and leaves its new
    streams only the lines the others do not hold (see `brokers.services.market_data_lines_share`).
    Not part of the ledger: each process updates its row in place.
    """

    client_id = models.IntegerField(primary_key=True, help_text="The IB API client id of the connection")
    holder = models.CharField(max_length=200, help_text="host:pid of the process")
    lines = models.PositiveIntegerField(default=0)
    reported_at = models.DateTimeField()

    class Meta:
        verbose_name = "market-data line use"

    def __str__(self) -> str:
        return f"client {self.client_id}: {self.lines} lines ({self.holder})"
