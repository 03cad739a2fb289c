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
